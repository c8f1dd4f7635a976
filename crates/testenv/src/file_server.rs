//! A plain HTTP/1.1 server on loopback that serves fixed files by path: the "URL" policy source
//! in tests. Threads and std only; it answers GET, 404 for unknown paths, and closes each
//! connection after one response.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

pub struct FileServer {
    address: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Set on drop; the accept loop then ends and closes the listener, so that the address
    /// (a pod IP that kwok hands out again) is free for the next pod.
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0")
    }

    /// A server on a given loopback address: a test playing a pod's container listens on the
    /// pod's IP. A file put at `*` answers every path.
    pub fn start_on(address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?.to_string();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let served = files.clone();
        let counted = connections.clone();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let stopping = stop.clone();
        let accepting = std::thread::Builder::new()
            .name("file-server".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let files = served.clone();
                    std::thread::spawn(move || {
                        let _ = answer(stream, &files);
                    });
                }
            })?;
        Ok(Self {
            address,
            files,
            connections,
            stop,
            accepting: Some(accepting),
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves `bytes` at `path` from now on.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(path.to_string(), bytes);
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

fn answer(stream: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let body = files
        .lock()
        .ok()
        .and_then(|f| f.get(path).or_else(|| f.get("*")).cloned());
    let mut stream = stream;
    match body {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    stream.flush()
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop, which sees the flag and closes the listener.
        let _ = TcpStream::connect(&self.address);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}
