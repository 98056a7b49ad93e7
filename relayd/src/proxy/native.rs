//! Anthropic clients on Anthropic-native upstreams: the attempt that sends the request
//! untranslated ([`crate::translate::native`] rewrites it), and how its streamed answer feeds
//! the Anthropic stream pump of [`super::stream`] (which adds `ping`s while the upstream is
//! silent, the idle timeout, the line bound, an `error` event on a mid-stream failure, usage
//! recorded even when the client hangs up).

use bytes::Bytes;

use super::dispatch::{Attempt, Call};
use super::stream::AnthropicEvents;
use super::translate_error;
use crate::accounts::LiveAccount;
use crate::error::ApiError;
use crate::translate::Usage;
use crate::translate::{
    NativeRequestInfo, NativeStreamTap, native_error_event, prepare_native_request,
};

/// The native attempt for `account`: the client's body with its model, billing line and output
/// cap rewritten.
pub(super) fn attempt(
    body: &Bytes,
    account: &LiveAccount,
    max_output_tokens: Option<u32>,
) -> Result<Attempt<NativeRequestInfo>, ApiError> {
    let (upstream, info) =
        prepare_native_request(body, &account.settings.deployment_name, max_output_tokens)
            .map_err(translate_error)?;
    Ok(Attempt {
        call: Call::Messages,
        body: Bytes::from(upstream),
        stream: info.stream,
        extra: info,
    })
}

/// A native Messages stream passes through event by event: nothing is made up front (the
/// upstream's own `message_start` comes first), and an answer that ends without
/// `message_stop` is reported, since relayd cannot complete someone else's events.
impl AnthropicEvents for NativeStreamTap {
    fn start(&mut self, _out: &mut Vec<u8>) {}

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        NativeStreamTap::push(self, bytes, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        NativeStreamTap::finish(self, out);
        if self.ended() || self.errored() {
            Ok(())
        } else {
            Err("the upstream ended the stream before the answer was complete")
        }
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        native_error_event("api_error", message, out);
    }

    fn complete(&self) -> bool {
        self.ended() || self.errored()
    }

    fn upstream_errored(&self) -> bool {
        self.errored()
    }

    fn pending_bytes(&self) -> usize {
        NativeStreamTap::pending_bytes(self)
    }

    fn usage(&self) -> Usage {
        NativeStreamTap::usage(self).unwrap_or_default()
    }
}
