// Anthropic Messages wire format (POST /v1/messages) <-> native types, so apps written for the
// Anthropic SDK can point at Switchyard and reach any target. Parsing validates everything a
// client controls and names the offending field in the error.
//
// A stream follows Anthropic's event sequence exactly: message_start, content_block_start (one
// text block), ping, content_block_delta per delta, content_block_stop, message_delta (stop_reason
// and usage), message_stop; each with its "event:" line. A failure midway ends the stream with an
// "error" event and no message_stop.
#ifndef SWITCHYARD_GATEWAY_ANTHROPIC_CODEC_H_
#define SWITCHYARD_GATEWAY_ANTHROPIC_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/backend.h"
#include "gateway/gateway.h"
#include "nlohmann/json.hpp"

namespace switchyard::gateway {

// Parses a POST /v1/messages body. InvalidArgument names the field that is wrong.
absl::StatusOr<InboundRequest> ParseMessagesRequest(std::string_view body);

// The same, from a body already parsed by nlohmann (tests hold the two parsers' paths to the
// same answers).
absl::StatusOr<InboundRequest> MessagesFromJson(const nlohmann::json& body);

// "end_turn", "max_tokens" or "refusal".
std::string_view StopReasonName(backends::FinishReason reason);

// The message id shown to the client for a request id ("chatcmpl-X" -> "msg_X").
std::string MessageId(std::string_view request_id);

// The non-streaming response object ("type": "message").
std::string MessageJson(std::string_view id, std::string_view model, std::string_view content,
                        const backends::Completion& completion);

// message_start, content_block_start and ping: everything before the first text delta.
std::string MessageStartEvents(std::string_view id, std::string_view model);
// One content_block_delta (text_delta).
std::string MessageDeltaEvent(std::string_view text);
// content_block_stop, message_delta and message_stop.
std::string MessageEndEvents(const backends::Completion& completion);
// An "error" event for a stream that failed midway.
std::string MessageErrorEvent(const absl::Status& status);

// {"type": "error", "error": {"type", "message"}} as Anthropic sends it.
std::string AnthropicErrorJson(const absl::Status& status);
std::string AnthropicErrorJson(std::string_view type, std::string_view message);

}  // namespace switchyard::gateway

#endif  // SWITCHYARD_GATEWAY_ANTHROPIC_CODEC_H_
