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
}

impl FileServer {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = files.clone();
        std::thread::Builder::new()
            .name("file-server".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let files = served.clone();
                    std::thread::spawn(move || {
                        let _ = answer(stream, &files);
                    });
                }
            })?;
        Ok(Self { address, files })
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
    let body = files.lock().ok().and_then(|f| f.get(path).cloned());
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
