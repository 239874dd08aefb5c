"""Request translation both ways (egressproxy/ai_formats/requests_to_*.py): what maps, what is dropped and
noted, what refuses; lossless round trips."""

from __future__ import annotations

from typing import Any

import pytest

from egressproxy.ai_formats import (
    DEFAULT_MAX_TOKENS,
    ApiFormat,
    MalformedPayload,
    Untranslatable,
    translate_request,
)
from egressproxy.ai_formats.requests_to_anthropic import to_anthropic_request
from egressproxy.ai_formats.requests_to_openai import to_openai_request

WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

OPENAI_TOOL_CONVERSATION: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here and in Paris?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Zürich"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 °C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "9 °C, rain"},
        {"role": "assistant", "content": "Zürich is sunny, Paris rainy."},
        {"role": "user", "content": "Thanks!"},
    ],
    "max_tokens": 300,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": ["END"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                "parameters": WEATHER_SCHEMA}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "user": "workload-7",
}

ANTHROPIC_TOOL_CONVERSATION: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 300,
    "system": "You are a weather bot.",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather here and in Paris?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Zürich"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 °C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "9 °C, rain"},
        ]},
        {"role": "assistant", "content": "Zürich is sunny, Paris rainy."},
        {"role": "user", "content": "Thanks!"},
    ],
    "temperature": 0.2,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "stream": True,
    "tools": [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER_SCHEMA}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "workload-7"},
}


def test_openai_request_to_anthropic() -> None:
    translated = to_anthropic_request(OPENAI_TOOL_CONVERSATION, "claude-sonnet-4-5")
    assert translated.stream and translated.include_usage and translated.losses == ()
    body = translated.body
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == "You are a weather bot."
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}},
    ]
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Zürich"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Paris"}},
    ]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "12 °C, sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "9 °C, rain"},
    ]}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert body["max_tokens"] == 300 and body["stop_sequences"] == ["END"]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather of a city",
                              "input_schema": WEATHER_SCHEMA}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "workload-7"}
    assert body["stream"] is True and "stream_options" not in body


def test_anthropic_request_to_openai() -> None:
    translated = to_openai_request(ANTHROPIC_TOOL_CONVERSATION, "gpt-4o")
    assert translated.stream and translated.losses == ()
    body = translated.body
    assert body["messages"][0] == {"role": "system", "content": "You are a weather bot."}
    assert body["messages"][1]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert body["messages"][2]["tool_calls"][0] == {
        "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Zürich"}'}}
    assert body["messages"][3:5] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12 °C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "9 °C, rain"},
    ]
    assert body["max_tokens"] == 300 and body["stop"] == ["END"]
    assert body["stream_options"] == {"include_usage": True}  # so token usage can be counted and translated
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["user"] == "workload-7"


def test_round_trips_are_lossless() -> None:
    """OpenAI -> Anthropic -> OpenAI and Anthropic -> OpenAI -> Anthropic give back the request (tool call
    arguments written as compact JSON, as the fixture does)."""
    there = to_anthropic_request(OPENAI_TOOL_CONVERSATION, "claude").body
    back = to_openai_request(there, "gpt-4o").body
    assert back == OPENAI_TOOL_CONVERSATION

    there = to_openai_request(ANTHROPIC_TOOL_CONVERSATION, "gpt-4o").body
    assert to_anthropic_request(there, "claude-sonnet-4-5").body == ANTHROPIC_TOOL_CONVERSATION


def test_missing_max_tokens_becomes_4096_and_max_completion_tokens_wins() -> None:
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert to_anthropic_request(plain, "c").body["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    both = plain | {"max_tokens": 10, "max_completion_tokens": 20}
    assert to_anthropic_request(both, "c").body["max_tokens"] == 20
    assert to_openai_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}, "o3",
                             max_tokens_field="max_completion_tokens").body["max_completion_tokens"] == 7


def test_system_and_developer_messages_become_blocks_in_order() -> None:
    body = {"messages": [
        {"role": "system", "content": "one"},
        {"role": "developer", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "late"},
    ]}
    translated = to_anthropic_request(body, "c")
    assert translated.body["system"] == [{"type": "text", "text": t} for t in ("one", "two", "late")]
    assert translated.losses == ("messages[3]: a system message inside the conversation moved to the top-level system",)
    anthropic = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                 "system": [{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}}]}
    translated = to_openai_request(anthropic, "g")
    assert translated.body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "one"}]}
    assert translated.losses == ("system[0].cache_control: no OpenAI equivalent, dropped",)


def test_a_user_message_after_tool_results_joins_their_turn_after_them() -> None:
    body = {"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "done"}]},
        {"role": "user", "content": "and now?"},
    ]}
    messages = to_anthropic_request(body, "c").body["messages"]
    assert messages[1]["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "done"}]},
        {"type": "text", "text": "and now?"},
    ]}
    back = to_openai_request({"max_tokens": 1, "messages": messages}, "g").body["messages"]
    assert back[2:] == [{"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "done"}]},
                        {"role": "user", "content": [{"type": "text", "text": "and now?"}]}]


def test_legacy_functions_and_function_call() -> None:
    body = {"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}},
        {"role": "function", "name": "f", "content": "ok"},
    ], "functions": [{"name": "f", "parameters": {"type": "object"}}], "function_call": {"name": "f"}}
    out = to_anthropic_request(body, "c").body
    call_id = out["messages"][1]["content"][0]["id"]
    assert out["messages"][1]["content"][0] == {"type": "tool_use", "id": call_id, "name": "f", "input": {"a": 1}}
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "ok"}]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f"}


@pytest.mark.parametrize(("choice", "expected"), [
    ("none", {"type": "none"}), ("auto", {"type": "auto"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
def test_tool_choice_both_ways(choice: Any, expected: dict[str, Any]) -> None:
    openai = {"messages": [{"role": "user", "content": "x"}], "tool_choice": choice,
              "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert to_anthropic_request(openai, "c").body["tool_choice"] == expected
    anthropic = {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "tool_choice": expected,
                 "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    assert to_openai_request(anthropic, "g").body["tool_choice"] == choice


def test_a_tool_choice_without_tools_is_dropped() -> None:
    """Both APIs refuse a tool_choice (or parallel flag) when no tools are given."""
    openai = {"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto", "parallel_tool_calls": False}
    translated = to_anthropic_request(openai, "c")
    assert "tool_choice" not in translated.body and "tools" not in translated.body
    assert translated.losses == ("tool_choice: no tools to choose from, dropped",)
    anthropic = {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                 "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}
    translated = to_openai_request(anthropic, "g")
    assert {"tool_choice", "parallel_tool_calls", "tools"}.isdisjoint(translated.body)
    assert translated.losses == ("tool_choice: no tools to choose from, dropped",)


def test_parallel_tool_calls_false_alone_disables_parallel_use() -> None:
    openai = {"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False,
              "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert to_anthropic_request(openai, "c").body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("member", "value", "field"), [
    ("n", 2, "n"),
    ("logprobs", True, "logprobs"),
    ("response_format", {"type": "json_object"}, "response_format"),
    ("modalities", ["text", "audio"], "audio"),
    ("tools", [{"type": "custom", "custom": {"name": "x"}}], "tools[0]"),
    ("tool_choice", {"type": "allowed_tools"}, "tool_choice"),
    ("messages", [{"role": "system", "content": "only instructions"}], "messages"),
])
def test_openai_requests_the_anthropic_api_cannot_express_are_refused(member: str, value: Any, field: str) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], member: value}
    with pytest.raises(Untranslatable) as refused:
        to_anthropic_request(body, "c")
    assert refused.value.field == field


@pytest.mark.parametrize(("part", "field"), [
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "messages[0].content[0]"),
    ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[0]"),
    ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "messages[0].content[0].image_url.url"),
])
def test_openai_parts_that_cannot_be_translated_are_refused(part: dict[str, Any], field: str) -> None:
    with pytest.raises(Untranslatable) as refused:
        to_anthropic_request({"messages": [{"role": "user", "content": [part]}]}, "c")
    assert refused.value.field == field


def test_malformed_tool_arguments_are_refused_without_quoting_them() -> None:
    body = {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{sk-secret"}}]}]}
    with pytest.raises(Untranslatable) as refused:
        to_anthropic_request(body, "c")
    assert "sk-secret" not in str(refused.value)
    assert refused.value.field == "messages[0].tool_calls[0].function.arguments"


@pytest.mark.parametrize(("body", "field"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x"}}]}]}]}, "messages[0].content[0].content[0]"),
])
def test_anthropic_requests_openai_cannot_express_are_refused(body: dict[str, Any], field: str) -> None:
    full = {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]} | body
    with pytest.raises(Untranslatable) as refused:
        to_openai_request(full, "g")
    assert refused.value.field == field


def test_dropped_members_are_noted_by_name() -> None:
    openai = {"messages": [{"role": "user", "content": "x", "name": "bob"}], "seed": 1, "presence_penalty": 0.5,
              "temperature": 1.5, "n": 1}
    translated = to_anthropic_request(openai, "c")
    assert translated.body["temperature"] == 1
    assert set(translated.losses) == {
        "messages[0].name: Anthropic messages carry no participant name, dropped",
        "temperature: above Anthropic's maximum of 1, clamped",
        "seed: no Anthropic equivalent, dropped",
        "presence_penalty: no Anthropic equivalent, dropped",
    }
    anthropic = {"max_tokens": 1, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
                 "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
                     {"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "y"}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True,
                                                   "content": "boom"}]}]}
    translated = to_openai_request(anthropic, "g")
    assert translated.body["messages"][1] == {"role": "assistant", "content": "y"}
    assert set(translated.losses) == {
        "top_k: no OpenAI equivalent, dropped", "thinking: no OpenAI equivalent, dropped",
        "messages[1].content[0]: thinking blocks have no OpenAI equivalent, dropped",
        "messages[2].content[0].is_error: OpenAI tool messages have no error flag, dropped",
    }


@pytest.mark.parametrize("translate", [to_anthropic_request, to_openai_request])
@pytest.mark.parametrize("messages", [None, [], "hi", [{"role": "robot", "content": "x"}], ["x"]])
def test_malformed_requests(translate: Any, messages: Any) -> None:
    with pytest.raises(MalformedPayload):
        translate({"messages": messages, "max_tokens": 1}, "m")


def test_translate_request_dispatches_and_same_format_only_swaps_the_model() -> None:
    same = translate_request(OPENAI_TOOL_CONVERSATION, ApiFormat.OPENAI_CHAT, ApiFormat.OPENAI_CHAT, "local-llama")
    assert same.body == OPENAI_TOOL_CONVERSATION | {"model": "local-llama"}
    assert same.stream and same.include_usage
    cross = translate_request(OPENAI_TOOL_CONVERSATION, ApiFormat.OPENAI_CHAT, ApiFormat.ANTHROPIC_MESSAGES, "c")
    assert cross.body == to_anthropic_request(OPENAI_TOOL_CONVERSATION, "c").body
    cross = translate_request(ANTHROPIC_TOOL_CONVERSATION, ApiFormat.ANTHROPIC_MESSAGES, ApiFormat.OPENAI_CHAT, "g")
    assert cross.body == to_openai_request(ANTHROPIC_TOOL_CONVERSATION, "g").body
