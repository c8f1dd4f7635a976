use std::net::TcpListener;

use crate::Error;

/// Asks the kernel for a free loopback port. The port is released before the caller binds it,
/// which is racy in theory; the control plane fails loudly if another process wins the race.
pub(crate) fn free_loopback_port() -> Result<u16, Error> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("local address of probe socket"))?
        .port();
    Ok(port)
}
