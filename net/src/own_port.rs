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

use std::io;
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

impl<T> Transport for OwnPortFallback<T>
where
    T: Transport<Error = io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
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
                (r, _) => r,
            }
        }
        .boxed())
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}
