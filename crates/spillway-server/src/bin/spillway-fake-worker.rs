//! A worker without Python: it speaks the frame protocol on fd 3 like the real one, and
//! answers by the request path with the behaviours the front must survive (a death, a
//! hang, a flood past its credit, a malformed frame). The front's tests start it through
//! an ordinary worker command, so every front behaviour can be tested without an
//! interpreter.
//!
//! Paths: `/hello`; `/echo` (the request body back); `/big/N` (N bytes, under response
//! credit); `/slow/MS`; `/status/CODE`; `/die`, `/die-after-head`; `/hang`;
//! `/wait-cancel` (writes `cancelled-<path tail>` into `$FAKE_DIR` when the cancel comes);
//! `/garbage` (a malformed frame); `/abort` (head, some body, then abort); `/end-no-head`;
//! `/overrun` (more body than the credit); `/no-read` (answers without reading the body);
//! `/environ` (the head's fields as text); `/pid` (the worker's pid);
//! `/length/DECLARED/SENT` (a `Content-Length` that may be wrong). `/echo` and `/big/N`
//! write `cancelled-echo` and `cancelled-big-N` into `$FAKE_DIR` when cancelled midway.
//! `$FAKE_THREADS` (default 2) is announced in `Ready`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spillway_proto::{
    decode, Frame, RecvWindow, RequestHead, ResponseHead, SendWindow, INITIAL_REQUEST_WINDOW,
    INITIAL_RESPONSE_WINDOW, PROTOCOL_VERSION, REQUEST_WINDOW,
};

/// What the reader passes to a request's handler thread.
enum Input {
    Body(Bytes),
    End,
    Cancel,
    Credit(u32),
}

#[derive(Clone)]
struct Out(Arc<Mutex<UnixStream>>);

impl Out {
    fn send(&self, f: &Frame) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf).expect("fake worker frames fit");
        self.raw(&buf);
    }

    fn raw(&self, bytes: &[u8]) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.write_all(bytes).is_err() {
            std::process::exit(1);
        }
    }
}

fn main() {
    // SAFETY: the front passes our end of the socketpair as fd 3; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(3) };
    let out = Out(Arc::new(Mutex::new(sock.try_clone().expect("clone fd 3"))));
    let threads: u16 = std::env::var("FAKE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    out.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    });
    out.send(&Frame::Ready { threads });
    read_loop(sock, &out);
}

fn read_loop(mut sock: UnixStream, out: &Out) {
    let mut streams: HashMap<u32, Sender<Input>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = decode(&mut buf).expect("the front speaks the protocol") {
            let (stream, input) = match frame {
                Frame::RequestHead { stream, head } => {
                    let (tx, rx) = channel();
                    streams.insert(stream, tx);
                    let out = out.clone();
                    std::thread::spawn(move || handle(stream, *head, rx, out));
                    continue;
                }
                Frame::RequestBody { stream, data } => (stream, Input::Body(data)),
                Frame::RequestEnd { stream } => (stream, Input::End),
                Frame::Cancel { stream } | Frame::Expire { stream } => (stream, Input::Cancel),
                Frame::ResponseCredit { stream, bytes } => (stream, Input::Credit(bytes)),
                Frame::Shutdown => std::process::exit(0),
                // A real worker grows on it; the fake one has a fixed pool.
                Frame::Backlog { .. } | Frame::Served { .. } => continue,
                other => panic!("unexpected frame from the front: {other:?}"),
            };
            if let Some(tx) = streams.get(&stream) {
                if tx.send(input).is_err() {
                    streams.remove(&stream);
                }
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One request on its own thread: what a Python thread would do.
struct Request {
    stream: u32,
    head: RequestHead,
    rx: Receiver<Input>,
    out: Out,
    send: SendWindow,
    recv: RecvWindow,
    body_done: bool,
}

impl Request {
    fn head(&self, status: u16, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect();
        self.out.send(&Frame::ResponseHead {
            stream: self.stream,
            head: Box::new(ResponseHead { status, headers }),
        });
    }

    fn end(&self) {
        self.out.send(&Frame::ResponseEnd {
            stream: self.stream,
        });
    }

    /// Waits for the next input; credit is applied on the way.
    fn next(&mut self) -> Option<Input> {
        let input = self.rx.recv().ok()?;
        if let Input::Credit(n) = input {
            self.send
                .grant(n)
                .expect("the front grants within the window");
        }
        Some(input)
    }

    /// Sends `data` as response body, waiting for credit; false if cancelled.
    fn body(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = self.send.take(data.len().min(16 * 1024));
            if n == 0 {
                match self.next() {
                    Some(Input::Cancel) | None => return false,
                    _ => continue,
                }
            }
            self.out.send(&Frame::ResponseBody {
                stream: self.stream,
                data: Bytes::copy_from_slice(&data[..n]),
            });
            data = &data[n..];
        }
        true
    }

    /// Reads the whole request body, granting credit as it goes; None if cancelled.
    fn read_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        while !self.body_done {
            if let Some(grant) = self.recv.replenish() {
                self.out.send(&Frame::BodyCredit {
                    stream: self.stream,
                    bytes: grant,
                });
            }
            match self.next()? {
                Input::Body(b) => {
                    self.recv
                        .received(b.len())
                        .expect("the front keeps to its credit");
                    body.extend_from_slice(&b);
                }
                Input::End => self.body_done = true,
                Input::Cancel => return None,
                Input::Credit(_) => {}
            }
        }
        Some(body)
    }

    fn wait_cancel(&mut self) {
        while let Some(i) = self.next() {
            if let Input::Cancel = i {
                return;
            }
        }
    }
}

fn handle(stream: u32, head: RequestHead, rx: Receiver<Input>, out: Out) {
    let path = String::from_utf8_lossy(&head.path_info).into_owned();
    let mut r = Request {
        stream,
        body_done: matches!(head.body, spillway_proto::BodyKind::Empty),
        recv: RecvWindow::new(
            REQUEST_WINDOW,
            if head.expect_continue {
                0
            } else {
                INITIAL_REQUEST_WINDOW
            },
        ),
        send: SendWindow::new(INITIAL_RESPONSE_WINDOW),
        head,
        rx,
        out,
    };
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (name, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !well_behaved(&mut r, name, arg) {
        misbehave(&mut r, name, arg);
    }
}

/// Answers as an application would; false for the paths that test misbehaviour.
fn well_behaved(r: &mut Request, name: &str, arg: &str) -> bool {
    match name {
        "hello" => {
            r.head(
                200,
                &[("Content-Type", "text/plain"), ("Content-Length", "5")],
            );
            r.body(b"hello");
        }
        "echo" => {
            let Some(body) = r.read_body() else {
                mark("cancelled-echo");
                r.end();
                return true;
            };
            r.head(200, &[("Content-Length", &body.len().to_string())]);
            r.body(&body);
        }
        "no-read" => {
            r.head(200, &[("Content-Length", "2")]);
            r.body(b"ok");
        }
        "big" => {
            let n: usize = arg.parse().unwrap_or(0);
            r.head(200, &[("Content-Length", &n.to_string())]);
            let piece: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
            let mut left = n;
            while left > 0 {
                let k = left.min(piece.len());
                if !r.body(&piece[..k]) {
                    mark(&format!("cancelled-big-{n}"));
                    break;
                }
                left -= k;
            }
        }
        "slow" => {
            std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(100)));
            r.head(200, &[("Content-Length", "4")]);
            r.body(b"slow");
        }
        "status" => r.head(arg.parse().unwrap_or(200), &[("Content-Length", "0")]),
        "environ" => environ(r),
        "pid" => {
            let pid = std::process::id().to_string();
            r.head(200, &[("Content-Length", &pid.len().to_string())]);
            r.body(pid.as_bytes());
        }
        "wait-cancel" => {
            r.wait_cancel();
            mark(&format!("cancelled-{arg}"));
        }
        _ => return false,
    }
    r.end();
    true
}

/// What a broken application or worker does.
fn misbehave(r: &mut Request, name: &str, arg: &str) {
    let stream = r.stream;
    match name {
        "die" => std::process::exit(7),
        "die-after-head" => {
            r.head(200, &[]);
            r.body(b"partial");
            std::thread::sleep(Duration::from_millis(50));
            std::process::exit(7);
        }
        "hang" => {
            r.wait_cancel();
            mark(&format!("cancelled-{arg}"));
            // Like a Python thread that ignores the cancel: it never frees itself.
            std::thread::sleep(Duration::from_secs(3600));
        }
        "garbage" => r.out.raw(&[0xff, 0xff, 0xff, 0xff, 0x20, 0, 0, 0, 0]),
        "abort" => {
            r.head(200, &[]);
            r.body(b"first part");
            std::thread::sleep(Duration::from_millis(50));
            r.out.send(&Frame::ResponseAbort { stream });
        }
        "end-no-head" => r.end(),
        "length" => {
            let mut nums = arg.split('/').map(|n| n.parse::<usize>().unwrap_or(0));
            let (declared, sent) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
            r.head(200, &[("Content-Length", &declared.to_string())]);
            r.body(&vec![b'x'; sent]);
            r.end();
        }
        "overrun" => {
            r.head(200, &[]);
            let flood = vec![b'x'; INITIAL_RESPONSE_WINDOW as usize + 1];
            r.out.send(&Frame::ResponseBody {
                stream,
                data: Bytes::from(flood),
            });
            r.wait_cancel();
            r.end();
        }
        _ => {
            r.head(404, &[("Content-Length", "0")]);
            r.end();
        }
    }
}

/// The head's fields as text, one per line.
fn environ(r: &mut Request) {
    let h = &r.head;
    let mut text = format!(
        "method={} path={} query={} remote={}:{} host_port={}\n",
        String::from_utf8_lossy(&h.method),
        String::from_utf8_lossy(&h.path_info),
        String::from_utf8_lossy(&h.query_string),
        String::from_utf8_lossy(&h.remote_addr),
        String::from_utf8_lossy(&h.remote_port),
        String::from_utf8_lossy(&h.server_port),
    );
    for (k, v) in &h.headers {
        text.push_str(&format!(
            "{}={}\n",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        ));
    }
    r.head(200, &[("Content-Length", &text.len().to_string())]);
    r.body(text.as_bytes());
}

/// Leaves a file in `$FAKE_DIR`, for a test to see what reached the worker.
fn mark(name: &str) {
    if let Some(dir) = std::env::var_os("FAKE_DIR") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), b"");
    }
}
