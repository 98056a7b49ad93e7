//! Minimal outbound proxies for tests, on 127.0.0.1 port 0: an HTTP forward proxy (absolute-form
//! requests, as clients send for `http://` targets) and a SOCKS5 proxy with optional
//! username/password authentication. Each counts the connections it relayed and remembers the
//! credentials it was offered, so tests can prove relayd really went through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    credentials: Mutex<Vec<String>>,
}

/// A running proxy. Stops when dropped.
#[derive(Debug)]
pub struct ForwardProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// An HTTP forward proxy.
    pub async fn http() -> Self {
        Self::start(|socket, seen| Box::pin(http_connection(socket, seen))).await
    }

    /// A SOCKS5 proxy; with `credentials`, clients must authenticate with them.
    pub async fn socks5(credentials: Option<(&str, &str)>) -> Self {
        let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        Self::start(move |socket, seen| {
            Box::pin(socks5_connection(socket, seen, credentials.clone()))
        })
        .await
    }

    async fn start<F>(serve: F) -> Self
    where
        F: Fn(
                TcpStream,
                Arc<Seen>,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>
            + Send
            + Sync
            + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(socket, Arc::clone(&shared)));
            }
        });
        Self { addr, seen, task }
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Credentials clients presented (`user:password`), in order.
    pub fn credentials(&self) -> Vec<String> {
        self.seen.credentials.lock().expect("lock").clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the request head, connects to the absolute-form target and relays bytes both ways
/// (the upstream server accepts absolute-form request lines, so nothing needs rewriting).
async fn http_connection(mut client: TcpStream, seen: Arc<Seen>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text
        .split_whitespace()
        .nth(1)
        .and_then(|url| url.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| std::io::Error::other("not an absolute-form request"))?
        .to_owned();
    if let Some(auth) = text.lines().find_map(|l| {
        l.strip_prefix("Proxy-Authorization: Basic ")
            .or_else(|| l.strip_prefix("proxy-authorization: Basic "))
    }) {
        seen.credentials
            .lock()
            .expect("lock")
            .push(decode_basic(auth.trim()));
    }
    // Tests may only reach loopback: refuse anything else outright.
    if !(target.starts_with("127.0.0.1:") || target.starts_with("localhost:")) {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(&target).await?;
    upstream.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn socks5_connection(
    mut client: TcpStream,
    seen: Arc<Seen>,
    credentials: Option<(String, String)>,
) -> std::io::Result<()> {
    let mut header = [0u8; 2];
    client.read_exact(&mut header).await?;
    let mut methods = vec![0u8; usize::from(header[1])];
    client.read_exact(&mut methods).await?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, wanted]).await?;
    if let Some((user, pass)) = &credentials {
        let mut version_len = [0u8; 2];
        client.read_exact(&mut version_len).await?;
        let mut name = vec![0u8; usize::from(version_len[1])];
        client.read_exact(&mut name).await?;
        let mut len = [0u8; 1];
        client.read_exact(&mut len).await?;
        let mut password = vec![0u8; usize::from(len[0])];
        client.read_exact(&mut password).await?;
        let offered = format!(
            "{}:{}",
            String::from_utf8_lossy(&name),
            String::from_utf8_lossy(&password)
        );
        seen.credentials.lock().expect("lock").push(offered.clone());
        let ok = offered == format!("{user}:{pass}");
        client.write_all(&[1, u8::from(!ok)]).await?;
        if !ok {
            return Ok(());
        }
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return Err(std::io::Error::other("unsupported address type")),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    // Tests may only reach loopback: refuse anything else outright.
    if host != "127.0.0.1" && host != "localhost" {
        client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect((host.as_str(), port)).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

fn decode_basic(encoded: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
