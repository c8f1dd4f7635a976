//! One running command: its input, its output fanned out to every stream that follows it, a
//! short tail for streams that join late, and how it ended.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::wire::{Data, End, Event, ProcessConfig, ProcessInfo, Size};
use sandman_connect::{Code, RpcError};

/// How much recent output a process keeps for a stream that connects later (`Connect`,
/// `sandman sandbox logs`).
const TAIL_BYTES: usize = 64 << 10;

/// Where a process's input goes.
pub enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

pub struct Running {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: ProcessConfig,
    input: tokio::sync::Mutex<Option<Input>>,
    followers: Mutex<Vec<mpsc::Sender<Event>>>,
    tail: Mutex<(VecDeque<Data>, usize)>,
    ended: watch::Sender<Option<End>>,
}

impl Running {
    pub fn new(pid: u32, tag: Option<String>, config: ProcessConfig, input: Option<Input>) -> Self {
        Running {
            pid,
            tag,
            config,
            input: tokio::sync::Mutex::new(input),
            followers: Mutex::new(Vec::new()),
            tail: Mutex::new((VecDeque::new(), 0)),
            ended: watch::Sender::new(None),
        }
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: self.config.clone(),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    /// A new stream of this process's events: its recent output first, then what comes.
    pub fn follow(&self) -> mpsc::Receiver<Event> {
        let (sender, receiver) = mpsc::channel(crate::http::STREAM_BUFFER);
        let tail = lock(&self.tail);
        for data in &tail.0 {
            // The channel is new and the tail short; what does not fit is dropped, not waited for.
            let _ = sender.try_send(Event::Data(data.clone()));
        }
        if let Some(end) = self.ended.borrow().clone() {
            let _ = sender.try_send(Event::End(end));
        } else {
            lock(&self.followers).push(sender);
        }
        receiver
    }

    /// Hands `data` to every follower, waiting for each that is behind, so output is never
    /// lost and a flood is paced by its readers.
    pub async fn publish(&self, data: Data) {
        {
            let mut tail = lock(&self.tail);
            tail.1 += data_len(&data);
            tail.0.push_back(data.clone());
            while tail.1 > TAIL_BYTES {
                match tail.0.pop_front() {
                    Some(old) => tail.1 -= data_len(&old),
                    None => break,
                }
            }
        }
        let followers: Vec<_> = lock(&self.followers).clone();
        let mut gone = false;
        for follower in &followers {
            gone |= follower.send(Event::Data(data.clone())).await.is_err();
        }
        if gone {
            lock(&self.followers).retain(|f| !f.is_closed());
        }
    }

    pub fn finish(&self, end: End) {
        self.ended.send_replace(Some(end.clone()));
        for follower in lock(&self.followers).drain(..) {
            let _ = follower.try_send(Event::End(end.clone()));
        }
    }

    pub async fn write(&self, bytes: &[u8]) -> Result<(), RpcError> {
        let mut input = self.input.lock().await;
        let result = match input.as_mut() {
            None => {
                return Err(RpcError::new(
                    Code::FailedPrecondition,
                    format!(
                        "process {} takes no input (start it with stdin, or its stdin was closed)",
                        self.pid
                    ),
                ));
            }
            Some(Input::Pipe(pipe)) => pipe.write_all(bytes).await,
            Some(Input::Pty(pty)) => pty.write_all(bytes).await,
        };
        result.map_err(|e| RpcError::new(Code::FailedPrecondition, format!("input: {e}")))
    }

    /// Closes a pipe's stdin (the reader sees end of file); a PTY stays open, as envd's does.
    pub async fn close_input(&self) {
        let mut input = self.input.lock().await;
        if matches!(input.as_ref(), Some(Input::Pipe(_))) {
            *input = None;
        }
    }

    pub async fn resize(&self, size: Size) -> Result<(), RpcError> {
        let input = self.input.lock().await;
        let Some(Input::Pty(pty)) = input.as_ref() else {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("process {} has no PTY", self.pid),
            ));
        };
        let rows = u16::try_from(size.rows).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.cols).unwrap_or(u16::MAX);
        pty.resize(pty_process::Size::new(rows, cols))
            .map_err(|e| RpcError::new(Code::Internal, format!("resize: {e}")))
    }
}

fn data_len(data: &Data) -> usize {
    match data {
        Data::Stdout(b) | Data::Stderr(b) | Data::Pty(b) => b.len(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes as they come off a pipe, in chunks of at most 32 KiB.
pub const CHUNK: usize = 32 << 10;

pub fn chunk(buffer: &[u8]) -> Bytes {
    Bytes::copy_from_slice(buffer)
}
