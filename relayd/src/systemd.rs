//! The systemd notification protocol (`sd_notify`), implemented directly: one datagram per
//! message to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//! relayd sends `READY=1` once it listens and its store is open, `STOPPING=1` when a shutdown
//! begins, `STATUS=…` lines along the way, and `WATCHDOG=1` pings when `WATCHDOG_USEC` asks for
//! them. Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call is a no-op.
//!
//! Written here rather than pulled in as a crate because the protocol is a few lines of std and
//! the crates for it either use `unsafe` (forbidden in this workspace) or pull in libsystemd.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sends notifications to systemd's socket, if there is one. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

/// Why `NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither an absolute path nor `@abstract`.
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an @abstract socket name")]
    Unsupported(String),
    /// The address could not be built (too long, NUL byte).
    #[error("NOTIFY_SOCKET={value:?} is not a usable socket address: {source}")]
    Address {
        /// The variable's value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; a disabled one (with a warning) if it is set but unusable.
    pub fn from_env() -> Self {
        match Self::for_socket(std::env::var_os("NOTIFY_SOCKET").as_deref()) {
            Ok(notifier) => notifier,
            Err(e) => {
                tracing::warn!("{e}; systemd will not be notified");
                Self::default()
            }
        }
    }

    /// A notifier for the given `NOTIFY_SOCKET` value (`None` or empty: disabled).
    pub fn for_socket(value: Option<&OsStr>) -> Result<Self, NotifyError> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self::default());
        };
        let text = value.to_string_lossy().into_owned();
        let address = |source| NotifyError::Address {
            value: text.clone(),
            source,
        };
        let target = if let Some(name) = text.strip_prefix('@') {
            abstract_address(name.as_bytes()).map_err(address)?
        } else if text.starts_with('/') {
            SocketAddr::from_pathname(value).map_err(address)?
        } else {
            return Err(NotifyError::Unsupported(text));
        };
        Ok(Self {
            target: Some(target),
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments). Failures are logged, never
    /// fatal: systemd being gone must not take the relay down with it.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(state.as_bytes(), target));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot notify systemd ({})", state.replace('\n', " "));
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// `STATUS=…` alone.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    /// Pings `WATCHDOG=1` every `interval` until `cancel` fires. Run it as a tracked task.
    pub async fn watchdog(self, interval: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => self.notify("WATCHDOG=1"),
            }
        }
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as systemd recommends, or `None`
/// when no watchdog is configured for this process (`$WATCHDOG_PID` names another one).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn path_socket_receives_ready_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::for_socket(Some(path.as_os_str())).unwrap();
        assert!(notifier.enabled());
        notifier.ready("serving");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving");
        notifier.stopping("draining");
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=draining");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_status() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!(
            "relayd-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let value = format!("@{name}");
        let notifier = Notifier::for_socket(Some(OsStr::new(&value))).unwrap();
        notifier.status("hello");
        assert_eq!(receive(&socket), "STATUS=hello");
    }

    #[test]
    fn unset_or_odd_sockets_disable_notifications() {
        assert!(!Notifier::for_socket(None).unwrap().enabled());
        assert!(
            !Notifier::for_socket(Some(OsStr::new("")))
                .unwrap()
                .enabled()
        );
        let err = Notifier::for_socket(Some(OsStr::new("vsock:2:1234"))).unwrap_err();
        assert!(err.to_string().contains("vsock:2:1234"), "{err}");
        // Sending without a socket is a silent no-op.
        Notifier::default().ready("nobody listens");
    }

    #[test]
    fn watchdog_interval_is_half_and_respects_the_pid() {
        assert_eq!(
            watchdog_interval_from(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval_from(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
    }
}
