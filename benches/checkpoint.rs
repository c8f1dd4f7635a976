//! Checkpoint and restore of a real agent under real runsc, against the memory it has touched
//! (64 MiB, 256 MiB, 1 GiB of random bytes in gVisor's memory-backed `/tmp`), side by side with
//! a cold start of the same workload. It drives the supervisor that `sandman supervise` runs,
//! over its HTTP port, as the operator does. Needs root, `runsc` and `busybox-static`.
//!
//! ```sh
//! cargo bench --bench checkpoint
//! SANDMAN_CHECKPOINT_MIB=64,256 SANDMAN_CHECKPOINT_ROUNDS=5 cargo bench --bench checkpoint
//! # another runsc, and flags it takes:
//! SANDMAN_RUNSC=/path/to/runsc SANDMAN_RUNSC_PLATFORM=systrap \
//!   SANDMAN_RUNSC_CHECKPOINT_FLAGS="--compression=none" \
//!   SANDMAN_RUNSC_RESTORE_FLAGS="--background" cargo bench --bench checkpoint
//! ```
//!
//! - cold start: from starting the supervisor until the agent answers (its memory filled);
//! - checkpoint: the `POST /checkpoint` round trip (runsc checkpoint, sha256, meta, prune);
//! - restore: from starting a supervisor that restores until the agent answers again;
//! - memory back: from the same start until the agent has read back all it touched, and its
//!   checksum is the one from before the checkpoint (a background restore answers before its
//!   pages are all loaded: this is when they are, and it proves they came back whole).

use std::path::Path;
use std::time::{Duration, Instant};

use sandman::checkpoint::client::SupervisorClient;
use sandman::checkpoint::runsc::Mount;
use sandman::checkpoint::supervisor::{Forward, Options, Restore, Supervisor, default_bridge};
use sandman::checkpoint::{CheckpointRequest, StartKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

const CONTROL_PORT: u16 = 17_070;
const AGENT_PORT: u16 = 18_080;
/// The agent's second port: it answers with the md5 of the memory it touched, read when
/// the connection comes (`nc -e`), not before.
const MEMORY_PORT: u16 = 18_081;

fn main() {
    common::logs_to_stderr();
    let sizes: Vec<u64> = std::env::var("SANDMAN_CHECKPOINT_MIB")
        .unwrap_or_else(|_| "64,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: usize = std::env::var("SANDMAN_CHECKPOINT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "| touched memory | cold start (p50) | checkpoint (p50) | per GiB | restore (p50) | per GiB | memory back (p50) | image |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for mib in sizes {
        let mut cold = Vec::new();
        let mut checkpoint = Vec::new();
        let mut restore = Vec::new();
        let mut memory = Vec::new();
        let mut size = 0;
        for _ in 0..rounds {
            let round = runtime.block_on(one_round(mib));
            cold.push(round.cold);
            checkpoint.push(round.checkpoint);
            restore.push(round.restore);
            memory.push(round.memory_back);
            size = round.image_bytes;
        }
        let per_gib = |d: Duration| d.as_secs_f64() * 1024.0 / mib as f64;
        let (cold, checkpoint, restore) = (median(cold), median(checkpoint), median(restore));
        let memory = median(memory);
        println!(
            "| {mib} MiB | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.0} MiB |",
            cold.as_secs_f64(),
            checkpoint.as_secs_f64(),
            per_gib(checkpoint),
            restore.as_secs_f64(),
            per_gib(restore),
            memory.as_secs_f64(),
            size as f64 / (1024.0 * 1024.0),
        );
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

struct Round {
    cold: Duration,
    checkpoint: Duration,
    restore: Duration,
    memory_back: Duration,
    image_bytes: u64,
}

fn rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for applet in ["sh", "nc", "dd", "cat", "md5sum"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
}

/// The Sandbox's token the supervisor is given, and the bench signs with.
const TOKEN: &str = "bench-token";

fn options(dir: &Path, mib: u64, run: &str, restore: Option<Restore>) -> Options {
    let agent = format!(
        "dd if=/dev/urandom of=/tmp/memory bs=1M count={mib} iflag=fullblock 2>/dev/null; \
         (while true; do nc -l -p {MEMORY_PORT} -e md5sum /tmp/memory; done) & i=0; \
         while true; do i=$((i+1)); printf 'count=%s\\n' $i | nc -l -p {AGENT_PORT} >/dev/null; done"
    );
    Options {
        runsc: common::runsc(dir.join(run)),
        rootfs: dir.join("rootfs"),
        args: vec!["/bin/sh".into(), "-c".into(), agent],
        env: Vec::new(),
        cwd: "/".into(),
        mounts: vec![Mount {
            source: dir.join("volume"),
            destination: "/workspace".into(),
        }],
        images: dir.join("volume/.sandman/checkpoints"),
        control: ([127, 0, 0, 1], CONTROL_PORT).into(),
        forwards: [AGENT_PORT, MEMORY_PORT]
            .map(|port| Forward {
                listen: ([127, 0, 0, 1], port).into(),
                port,
            })
            .to_vec(),
        bridge: default_bridge(),
        restore,
        sandbox_uid: "bench".into(),
        token: TOKEN.into(),
        suspensions: 0,
        checkpoint_timeout: Duration::from_secs(600),
        restore_timeout: Duration::from_secs(600),
    }
}

/// Waits until the agent answers on `port` with something that contains `marker`, and gives
/// the answer (its memory is filled before it listens).
async fn answered(port: u16, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(900);
    while Instant::now() < deadline {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = stream.write_all(b"x\n").await;
            let mut body = String::new();
            let _ = stream.read_to_string(&mut body).await;
            if body.contains(marker) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the agent never answered on {port}");
}

async fn one_round(mib: u64) -> Round {
    let dir = tempfile::tempdir().expect("tempdir");
    rootfs(&dir.path().join("rootfs"));
    std::fs::create_dir_all(dir.path().join("volume")).expect("volume");

    let began = Instant::now();
    let first = Supervisor::start(options(dir.path(), mib, "run-1", None))
        .await
        .expect("start");
    answered(AGENT_PORT, "count=").await;
    let cold = began.elapsed();
    // md5sum prints "<digest>  /tmp/memory".
    let touched = answered(MEMORY_PORT, "/tmp/memory").await;

    let client = SupervisorClient::new(sandman::http_client::HttpClient::new().expect("client"));
    let began = Instant::now();
    let record = client
        .checkpoint(
            ("127.0.0.1", CONTROL_PORT),
            TOKEN,
            &CheckpointRequest {
                sandbox_uid: "bench".into(),
                pod: "bench".into(),
                suspension: 1,
                keep: 1,
                timeout_seconds: None,
            },
            Duration::from_secs(600),
        )
        .await
        .expect("checkpoint");
    let checkpoint = began.elapsed();
    drop(first);

    let began = Instant::now();
    let second = Supervisor::start(options(
        dir.path(),
        mib,
        "run-2",
        Some(Restore {
            image: record.image.clone(),
            sha256: record.sha256.clone(),
            signature: sandman::checkpoint::signed::restore_signature(
                TOKEN,
                "bench",
                &record.image,
                &record.sha256,
            ),
        }),
    ))
    .await
    .expect("restore");
    assert_eq!(
        second.start_report().start,
        StartKind::Restored,
        "{:?}",
        second.start_report()
    );
    answered(AGENT_PORT, "count=").await;
    let restore = began.elapsed();
    let back = answered(MEMORY_PORT, "/tmp/memory").await;
    let memory_back = began.elapsed();
    assert_eq!(back, touched, "the memory came back other than it was");
    drop(second);
    Round {
        cold,
        checkpoint,
        restore,
        memory_back,
        image_bytes: record.size_bytes,
    }
}
