//! `testenv real-node`: one real node as a process of its own, until it is told to stop.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};

use super::RealNode;
use crate::Error;

/// Runs real node `index` until SIGTERM or SIGINT (`testenv real-node`, which `testenv up
/// --real-nodes` starts): its root file system is busybox, made under `dir` and loaded as the
/// image `busybox`; with `supervisor` (a `sandman` binary) the checkpoint supervisor's image is
/// laid out from it and loaded as [`crate::supervisor_image::REFERENCE`]. On the way out it
/// removes its containers and its Node.
pub fn serve(
    index: usize,
    kubeconfig: &Path,
    dir: &Path,
    supervisor: Option<&Path>,
) -> Result<(), Error> {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).map_err(Error::io(format!("create {}", bin.display())))?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(Error::io(
        "copy /bin/busybox (apt-get install busybox-static)",
    ))?;
    for applet in BUSYBOX_APPLETS {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(Error::io(format!("link {}", link.display())))?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("start a tokio runtime"))?;
    runtime.block_on(async {
        let client = crate::client_from_kubeconfig(kubeconfig).await?;
        let node = RealNode::start(client.clone(), index, dir, &rootfs).await?;
        node.load_image("busybox", &rootfs);
        if let Some(sandman) = supervisor {
            let image =
                crate::supervisor_image::supervisor_image(sandman, &dir.join("supervisor-image"))?;
            node.load_image(crate::supervisor_image::REFERENCE, &image);
        }
        eprintln!("real node {} runs pods", node.name);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(Error::io("SIGTERM handler"))?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let name = node.name.clone();
        drop(node);
        let nodes: Api<Node> = Api::all(client);
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
        Ok(())
    })
}

/// The applets a real node's busybox root file system links.
const BUSYBOX_APPLETS: [&str; 12] = [
    "sh", "cat", "echo", "sleep", "httpd", "dmesg", "grep", "ls", "mkdir", "date", "nc", "head",
];
