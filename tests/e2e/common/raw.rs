//! Raw HTTP/1.1 over a plain TCP socket, for what a well-behaved client library will not do: trickle a
//! head or a body, repeat a header, send `Expect: 100-continue` and look at the very first bytes of the
//! answer, or hold a connection open and watch for the server to close it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .expect("connect to the server")
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// `HTTP/1.1 200 OK`
    pub status_line: String,
    /// The header lines, lower-cased names, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.status_line))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: the body is not JSON ({e}): {:?}",
                self.status_line,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one response (head, then a `Content-Length` body) within the deadline.
pub async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> RawResponse {
    tokio::time::timeout(DEADLINE, read_response_inner(stream))
        .await
        .expect("a response within the deadline")
}

async fn read_response_inner<R: AsyncRead + Unpin>(stream: &mut R) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read a response");
        assert!(
            n > 0,
            "the connection closed before a whole response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("UTF-8 response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let interim = status_line
        .split(' ')
        .nth(1)
        .is_some_and(|s| s.starts_with('1'));
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("a Content-Length"))
        .unwrap_or(0);
    if !interim {
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read a response body");
            assert!(n > 0, "the connection closed in the middle of a body");
            body.extend_from_slice(&chunk[..n]);
        }
    }
    RawResponse {
        status_line,
        headers,
        body,
    }
}

/// Sends `request` whole and reads the response.
pub async fn exchange(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = connect(addr).await;
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send a request");
    read_response(&mut stream).await
}

/// Waits up to `within` for the server to close `stream` (end of stream or reset), reading and
/// discarding whatever it sends meanwhile; returns how long that took, or `None` if it stayed open.
pub async fn closed_within<R: AsyncRead + Unpin>(
    stream: &mut R,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}
