//! TCP dials from the listening port, falling back to a port of their own.
//!
//! libp2p dials TCP from the port a node listens on (port reuse): that is
//! what lets a TCP hole punch meet the NAT mapping the peer saw. The kernel
//! may refuse that port to a new socket (`EADDRINUSE` at bind, which
//! libp2p-tcp 0.45 does not retry; it retries only `EADDRNOTAVAIL`). A node
//! then could not dial the bootstrap node, or a peer, at all, for as long
//! as the conflict lasts: on a loaded test machine a peer started, was never
//! found, and the SPN waited for it in vain. Such a dial is made again from
//! a port the kernel picks; a hole punch still gets its reused port
//! whenever the kernel allows it.
//!
//! The reused port is bound on every address (`0.0.0.0:PORT`). A node
//! listening on `127.0.0.14:P` that dials `127.0.0.1:P` (another node on
//! the same machine, whose port number happens to be the same) leaves from
//! `127.0.0.1:P`: the kernel connects the socket to itself (a TCP
//! simultaneous open), and the handshake fails with "input error" on every
//! try. A test peer stayed cut off from its bootstrap node that way. A dial
//! that reaches itself is made again from a port of its own too.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent};

/// A transport whose dials with [`PortUse::Reuse`] are made again with
/// [`PortUse::New`] when the reused port is refused.
pub(crate) struct OwnPortFallback<T>(pub(crate) T);

/// Whether a dial failed because the local port could not be taken.
fn port_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrInUse
}

/// A connection's two ends, where the transport knows them.
pub(crate) trait Ends {
    /// Its local and its remote address.
    fn ends(&self) -> Option<(SocketAddr, SocketAddr)>;
}

impl Ends for libp2p::tcp::tokio::TcpStream {
    fn ends(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.0.local_addr().ok()?, self.0.peer_addr().ok()?))
    }
}

/// Whether a connection is a socket connected to itself.
fn to_itself(c: &impl Ends) -> bool {
    c.ends().is_some_and(|(local, remote)| local == remote)
}

impl<T> Transport for OwnPortFallback<T>
where
    T: Transport<Error = io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: Ends + Send + 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<T::Output>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<io::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<io::Error>> {
        let first = self.0.dial(addr.clone(), opts)?;
        // The spare dial is made now (the transport is not ours inside the
        // future); it is a socket that connects only if it is needed.
        let spare = (opts.port_use == PortUse::Reuse)
            .then(|| self.0.dial(addr.clone(), DialOpts { port_use: PortUse::New, ..opts }).ok())
            .flatten();
        Ok(async move {
            match (first.await, spare) {
                (Err(e), Some(spare)) if port_refused(&e) => {
                    tracing::debug!(%addr, "the listening port was refused to a dial ({e}): dialling from another");
                    spare.await
                }
                (Ok(c), spare) if to_itself(&c) => {
                    drop(c);
                    let Some(spare) = spare else {
                        return Err(io::Error::other(format!("the dial to {addr} reached this node's own socket")));
                    };
                    tracing::debug!(%addr, "a dial from the listening port reached itself: dialling from another");
                    spare.await
                }
                (r, _) => r,
            }
        }
        .boxed())
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}
