//! `proxy-send-timeout`, nginx's proxy_send_timeout: the upstream must take each piece of the
//! request within this time of the previous one. A request body goes to hyper frame by frame,
//! and hyper asks for the next frame only once it has written (or buffered) the one before; so
//! a frame handed over and not followed by a new ask within the timeout means the upstream has
//! stopped reading. Waiting for the client's next bytes does not count.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

// tokio's clock, so tests can run on a paused one.
use tokio::time::Instant;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::proxy::{Body, BoxError};

/// When the frame hyper is still writing was handed to it; `None` while hyper waits for more.
#[derive(Clone, Default)]
pub struct Handed(Arc<Mutex<Option<Instant>>>);

impl Handed {
    fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once a handed frame has waited `limit` for the upstream to take it.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            let wait = match self.get() {
                Some(at) if at.elapsed() >= limit => return,
                Some(at) => limit - at.elapsed(),
                None => limit.min(Duration::from_secs(1)),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The request body as the upstream connection reads it, noting when each frame is handed over.
pub struct Watched {
    inner: Body,
    handed: Handed,
}

impl Watched {
    pub fn new(inner: Body) -> (Watched, Handed) {
        let handed = Handed::default();
        (
            Watched {
                inner,
                handed: handed.clone(),
            },
            handed,
        )
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Asked again: the previous frame has been taken.
        self.handed.set(None);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper need not ask again after the last frame, so the last one is not watched:
        // otherwise a slow answer to a finished request would look like a stalled write.
        if let Poll::Ready(Some(Ok(_))) = &polled
            && !self.inner.is_end_stream()
        {
            self.handed.set(Some(Instant::now()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_frame_not_taken_in_time_is_a_stall_and_waiting_for_the_client_is_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let (mut body, handed) = Watched::new(StreamBody::new(stream).boxed());
        let limit = Duration::from_secs(5);

        // The client is slow: hyper waits for a frame, which is no stall.
        let waiting = tokio::spawn({
            let handed = handed.clone();
            async move { handed.stalled(limit).await }
        });
        let first = tokio::spawn(async move {
            let frame = body.frame().await;
            (body, frame)
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "waiting for the client is no stall");
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .expect("send");
        let (mut body, frame) = first.await.expect("task");
        assert!(frame.is_some());

        // Handed over and never asked for again: a stall after the limit.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(waiting.is_finished(), "an untaken frame is a stall");

        // Asked for again in time: not a stall.
        assert!(body.frame().now_or_never().is_none(), "no frame yet");
        let again = tokio::spawn({
            let handed = handed.clone();
            async move { handed.stalled(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!again.is_finished());
    }
}
