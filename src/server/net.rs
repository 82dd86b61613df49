//! Accepted connections, shaped for many small gRPC answers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP connection that tells h2 it cannot write vectored.
///
/// h2 copies a DATA frame smaller than its "chain threshold" into its write
/// buffer, where the frames of many streams leave in one write. A larger
/// frame is held aside and forces a write of its own before anything else
/// can be buffered. The threshold is 256 bytes on a connection that writes
/// vectored (a plain `TcpStream`) and 1 KiB otherwise, so on a `TcpStream`
/// every answer of 256 bytes to 1 KiB (WhoAmI's, for one) cost an
/// extra write: about 1.7 writes per call instead of 0.9 (docs/performance.md).
/// Frames above 1 KiB now take two plain writes instead of one `writev`.
pub(crate) struct Coalescing(pub(crate) TcpStream);

impl Connected for Coalescing {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Coalescing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
