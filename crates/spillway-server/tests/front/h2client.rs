//! An HTTP/2 client (prior knowledge, h2c) for the front's tests, on a runtime of its own
//! so the connection keeps being served (PINGs answered, SETTINGS acknowledged) between
//! the test's blocking calls. It can misbehave on purpose: stop reading, reset streams.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{self, ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request};
use tokio::runtime::Runtime;

/// What came back on a stream.
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl H2Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/2 connection.
pub struct H2 {
    rt: Runtime,
    send: SendRequest<Bytes>,
    /// The connection task; finished once the server closed it.
    conn: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    /// Connects with h2's defaults.
    pub fn connect(addr: SocketAddr) -> H2 {
        H2::connect_with(addr, client::Builder::new())
    }

    /// Connects with `builder`'s settings.
    pub fn connect_with(addr: SocketAddr, builder: client::Builder) -> H2 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (send, conn) = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let (send, conn) = builder.handshake(tcp).await.expect("h2 handshake");
            (send, tokio::spawn(conn))
        });
        H2 { rt, send, conn }
    }

    /// Runs `f` on the client's runtime, bounded by 30 s.
    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .expect("the HTTP/2 exchange took over 30 s")
        })
    }

    /// Runs `f` in the background on the client's runtime.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }

    /// Opens a stream: the request's head (and `end` ends it there).
    pub fn open(
        &mut self,
        req: Request<()>,
        end: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
        let send = self.send.clone();
        self.run(async move {
            let mut ready = send.ready().await?;
            ready.send_request(req, end)
        })
    }

    /// A request to `path` (a full `http://authority/path`, or a path), with `headers` and
    /// `body`; the whole response, or the stream's error.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<H2Response, h2::Error> {
        let uri = if path.starts_with('/') {
            format!("http://test{path}")
        } else {
            path.to_owned()
        };
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).expect("a valid request");
        let (resp, mut stream) = self.open(req, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body), true)?;
        }
        self.run(async move {
            let resp = resp.await?;
            let (parts, body) = resp.into_parts();
            Ok(H2Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: read_all(body).await?,
            })
        })
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<H2Response, h2::Error> {
        self.request("GET", path, &[], b"")
    }

    /// Whether the server closed the connection within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let conn = &mut self.conn;
        self.rt
            .block_on(async { tokio::time::timeout(wait, conn).await.is_ok() })
    }
}

/// Reads a response body to its end, giving the window back as it goes.
pub async fn read_all(mut body: RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
