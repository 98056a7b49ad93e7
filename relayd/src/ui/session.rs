//! Sign-in sessions of the status page: a cookie that says who signed in (admin or viewer) and
//! until when, signed with HMAC-SHA256 — never the token itself.
//!
//! The signing key is derived from the admin token (and, for viewers, the viewer token too), so
//! every relayd holding the same tokens accepts the others' cookies, and rotating a token signs
//! out everyone who signed in with it. Nothing is stored per session: signing out clears the
//! cookie in that browser; a copied cookie stays valid until it expires or the token rotates.

use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::auth::{AdminToken, hmac_sha256, lower_hex};

/// The cookie's name.
pub(super) const COOKIE: &str = "relayd_ui";

/// Who is signed in. Every page is read-only, so today both see the same pages; the role is
/// carried so a page that ever changes something can refuse viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Signed in with the admin token.
    Admin,
    /// Signed in with `ui.viewer_token_file`'s token.
    Viewer,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

/// Issues and checks session cookies.
pub(super) struct Sessions {
    admin: AdminToken,
    viewer: Option<AdminToken>,
    admin_key: [u8; 32],
    viewer_key: Option<[u8; 32]>,
    lifetime: Duration,
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("viewer", &self.viewer.is_some())
            .field("lifetime", &self.lifetime)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions signed with keys derived from `admin` (and `viewer`, for viewers).
    pub(super) fn new(
        admin: &AdminToken,
        viewer: Option<&AdminToken>,
        lifetime: Duration,
        secure: bool,
    ) -> Self {
        let admin_key = admin.derive_key("ui session admin");
        // Both tokens enter a viewer's key: rotating either signs viewers out.
        let viewer_key = viewer.map(|v| {
            hmac_sha256(
                &admin.derive_key("ui session viewer"),
                &v.derive_key("ui session viewer"),
            )
        });
        Self {
            admin: admin.clone(),
            viewer: viewer.cloned(),
            admin_key,
            viewer_key,
            lifetime,
            secure,
        }
    }

    /// The role `token` signs in as. Both comparisons always run, in constant time, so the
    /// answer's timing does not tell which token was close.
    pub(super) fn sign_in(&self, token: &str) -> Option<Role> {
        let admin = self.admin.verify(token);
        let viewer = self.viewer.as_ref().is_some_and(|v| v.verify(token));
        if admin {
            Some(Role::Admin)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    fn key(&self, role: Role) -> Option<&[u8; 32]> {
        match role {
            Role::Admin => Some(&self.admin_key),
            Role::Viewer => self.viewer_key.as_ref(),
        }
    }

    /// The cookie value for `role`, valid until `now_secs` + the session lifetime:
    /// `v1.<role>.<expiry>.<mac>`.
    pub(super) fn issue(&self, role: Role, now_secs: u64) -> String {
        let expiry = now_secs.saturating_add(self.lifetime.as_secs());
        let claims = format!("v1.{}.{expiry}", role.as_str());
        let key = self.key(role).unwrap_or(&self.admin_key);
        let mac = lower_hex(&hmac_sha256(key, claims.as_bytes()));
        format!("{claims}.{mac}")
    }

    /// The role of a cookie value that this relayd's tokens signed and that has not expired.
    pub(super) fn check(&self, value: &str, now_secs: u64) -> Option<Role> {
        let (claims, mac) = value.rsplit_once('.')?;
        let mut parts = claims.split('.');
        let (Some("v1"), Some(role), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let role = match role {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => return None,
        };
        let expected = lower_hex(&hmac_sha256(self.key(role)?, claims.as_bytes()));
        let valid: bool = expected.as_bytes().ct_eq(mac.as_bytes()).into();
        let expiry: u64 = expiry.parse().ok()?;
        (valid && now_secs < expiry).then_some(role)
    }

    /// `Set-Cookie` for a new session.
    pub(super) fn set_cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.lifetime.as_secs(),
            self.secure_attribute()
        )
    }

    /// `Set-Cookie` that removes the session from the browser.
    pub(super) fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.secure_attribute()
        )
    }

    fn secure_attribute(&self) -> &'static str {
        if self.secure { "; Secure" } else { "" }
    }
}

/// The value of cookie `name` in a `Cookie` request header.
pub(super) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(admin: &str, viewer: Option<&str>) -> Sessions {
        let viewer = viewer.map(AdminToken::new);
        Sessions::new(
            &AdminToken::new(admin),
            viewer.as_ref(),
            Duration::from_secs(3600),
            false,
        )
    }

    #[test]
    fn cookies_carry_a_signed_role_and_expiry_never_the_token() {
        let s = sessions("adm_secret", Some("view_secret"));
        assert_eq!(s.sign_in("adm_secret"), Some(Role::Admin));
        assert_eq!(s.sign_in("view_secret"), Some(Role::Viewer));
        assert_eq!(s.sign_in("adm_secre"), None);
        let admin = s.issue(Role::Admin, 1000);
        assert!(admin.starts_with("v1.admin.4600."), "{admin}");
        assert!(!admin.contains("adm_secret"));
        assert_eq!(s.check(&admin, 1000), Some(Role::Admin));
        assert_eq!(s.check(&admin, 4600), None, "expired");
        let viewer = s.issue(Role::Viewer, 1000);
        assert_eq!(s.check(&viewer, 1000), Some(Role::Viewer));
        // A viewer cannot turn its cookie into an admin one, nor extend it.
        let forged = viewer.replacen("viewer", "admin", 1);
        assert_eq!(s.check(&forged, 1000), None);
        let extended = admin.replacen("4600", "9999", 1);
        assert_eq!(s.check(&extended, 1000), None);
        for junk in ["", "v1", "v1.admin.x.y", "v2.admin.4600.00", "a.b.c.d.e"] {
            assert_eq!(s.check(junk, 0), None, "{junk}");
        }
    }

    #[test]
    fn instances_sharing_tokens_accept_each_other_and_rotation_signs_out() {
        let one = sessions("tok", Some("view"));
        let two = sessions("tok", Some("view"));
        let cookie = one.issue(Role::Admin, 0);
        let viewer = one.issue(Role::Viewer, 0);
        assert_eq!(two.check(&cookie, 1), Some(Role::Admin));
        assert_eq!(two.check(&viewer, 1), Some(Role::Viewer));
        let rotated = sessions("tok2", Some("view"));
        assert_eq!(rotated.check(&cookie, 1), None);
        assert_eq!(rotated.check(&viewer, 1), None);
        let viewer_rotated = sessions("tok", Some("view2"));
        assert_eq!(viewer_rotated.check(&viewer, 1), None);
        assert_eq!(viewer_rotated.check(&cookie, 1), Some(Role::Admin));
        assert_eq!(sessions("tok", None).check(&viewer, 1), None);
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let s = sessions("t", None);
        let set = s.set_cookie("v");
        assert_eq!(
            set,
            "relayd_ui=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        let secure = Sessions::new(&AdminToken::new("t"), None, Duration::from_secs(60), true);
        assert!(secure.set_cookie("v").ends_with("; Secure"));
        assert!(s.clear_cookie().contains("Max-Age=0"));
        assert_eq!(cookie_value("a=1; relayd_ui=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie_value("relayd_uix=1", COOKIE), None);
    }
}
