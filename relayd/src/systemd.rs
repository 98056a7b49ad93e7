//! systemd's notification protocol (`sd_notify`) through the `sd-notify` crate: relayd sends
//! `READY=1` once it listens and its store is open, `STOPPING=1` when a shutdown begins,
//! `STATUS=…` lines along the way, and `WATCHDOG=1` pings when `WATCHDOG_USEC` asks for them.
//! Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call is a no-op.
//!
//! The crate sends to a socket path. systemd may also name a Linux abstract socket (`@name`),
//! which the crate cannot reach: that one datagram is sent here with std, the same text.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Sends notifications to systemd's socket, if there is one. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Target,
}

/// Where notifications go.
#[derive(Debug, Clone, Default)]
enum Target {
    /// Nowhere.
    #[default]
    Off,
    /// The socket path in `NOTIFY_SOCKET`, through the crate.
    Path,
    /// A Linux abstract socket (`NOTIFY_SOCKET=@name`).
    Abstract(SocketAddr),
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

    /// A notifier for the given `NOTIFY_SOCKET` value (`None` or empty: disabled). A path is
    /// only checked here: the crate sends to the one in the environment.
    pub fn for_socket(value: Option<&OsStr>) -> Result<Self, NotifyError> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self::default());
        };
        let text = value.to_string_lossy().into_owned();
        let target = if let Some(name) = text.strip_prefix('@') {
            let address =
                abstract_address(name.as_bytes()).map_err(|source| NotifyError::Address {
                    value: text.clone(),
                    source,
                })?;
            Target::Abstract(address)
        } else if text.starts_with('/') {
            Target::Path
        } else {
            return Err(NotifyError::Unsupported(text));
        };
        Ok(Self { target })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        !matches!(self.target, Target::Off)
    }

    /// Sends `states` in one datagram. Failures are logged, never fatal: systemd being gone must
    /// not take the relay down with it.
    fn notify(&self, states: &[NotifyState<'_>]) {
        let sent = match &self.target {
            Target::Off => return,
            Target::Path => sd_notify::notify(states),
            Target::Abstract(address) => UnixDatagram::unbound()
                .and_then(|socket| socket.send_to_addr(message(states).as_bytes(), address))
                .map(drop),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot notify systemd ({})", message(states).trim_end().replace('\n', " "));
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `STATUS=…` alone.
    pub fn status(&self, status: &str) {
        self.notify(&[NotifyState::Status(status)]);
    }

    /// Pings `WATCHDOG=1` every `interval` until `cancel` fires. Run it as a tracked task.
    pub async fn watchdog(self, interval: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => self.notify(&[NotifyState::Watchdog]),
            }
        }
    }
}

/// The datagram the crate writes for `states`: one `KEY=value` line each.
fn message(states: &[NotifyState<'_>]) -> String {
    states.iter().map(|state| format!("{state}\n")).collect()
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as systemd recommends, or `None`
/// when no watchdog is configured for this process (`$WATCHDOG_PID` names another one).
pub fn watchdog_interval() -> Option<Duration> {
    let timeout = sd_notify::watchdog_enabled().filter(|t| !t.is_zero())?;
    Some((timeout / 2).max(Duration::from_millis(1)))
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

    // A socket path is the crate's, read from the environment: tests/it/operations.rs runs
    // relayd under a fake NOTIFY_SOCKET for it.

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_what_the_crate_would_send() {
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
        assert!(notifier.enabled());
        notifier.status("hello");
        assert_eq!(receive(&socket), "STATUS=hello\n");
        notifier.ready("serving");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving\n");
    }

    #[test]
    fn unset_or_odd_sockets_disable_notifications() {
        assert!(!Notifier::for_socket(None).unwrap().enabled());
        assert!(
            !Notifier::for_socket(Some(OsStr::new("")))
                .unwrap()
                .enabled()
        );
        assert!(
            Notifier::for_socket(Some(OsStr::new("/run/systemd/notify")))
                .unwrap()
                .enabled()
        );
        let err = Notifier::for_socket(Some(OsStr::new("vsock:2:1234"))).unwrap_err();
        assert!(err.to_string().contains("vsock:2:1234"), "{err}");
        // Sending without a socket is a silent no-op.
        Notifier::default().ready("nobody listens");
    }
}
