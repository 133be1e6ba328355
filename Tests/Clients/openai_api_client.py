#!/usr/bin/env python3
"""Keel's OpenAI-compatible API, driven by the official `openai` client,
unmodified (pinned in Tests/Clients/requirements.txt). Exit 3 when `openai`
cannot be imported.

  openai_api_client.py completions BASE_URL KEY FAKE_ROOT
      chat completions streaming and not, include_usage, a mid-stream
      fallback whose text is whole and unrepeated, parameters forwarded,
      errors before the stream (401, 404, 400) and in-band after it starts,
      GET /v1/models. Prints "N passed, 0 failed".
  openai_api_client.py create BASE_URL KEY MODEL
      a background response; prints its id
  openai_api_client.py stream BASE_URL KEY RESPONSE_ID [--until-deltas N] [--starting-after N]
      streams the response with responses.retrieve(stream=True); prints one
      JSON line: {"text", "last_sequence", "sequences", "types", "final"}
The models file the tests give Keel: `ok` (6 tokens), `cut-then-ok` (a
chain whose first model's stream is cut after 3 tokens), `inband` (a single
model that sends an in-band error after 2 tokens), `slow` (slow tokens).
"""
import json
import sys
import urllib.request

try:
    import openai
except ImportError as error:  # pragma: no cover
    print(f"cannot import openai: {error}", file=sys.stderr)
    sys.exit(3)

EXPECTED = "tok0 tok1 tok2 tok3 tok4 tok5 "
passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def fake_requests(root):
    with urllib.request.urlopen(root + "/_fake/requests") as response:
        return json.load(response)


def completions(base, key, fake_root):
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    names = [model.id for model in client.models.list()]
    check("models list every chain and model", {"default", "ok", "cut-then-ok", "inband"} <= set(names), names)

    whole = client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}])
    check("a completion", whole.choices[0].message.content == EXPECTED, whole)
    check("its finish reason", whole.choices[0].finish_reason == "stop", whole.choices[0].finish_reason)
    check("its usage", whole.usage is not None and whole.usage.completion_tokens == 6 and whole.usage.total_tokens > 6, whole.usage)
    check("its object", whole.object == "chat.completion" and whole.id.startswith("chatcmpl-"), whole.id)

    chunks = list(client.chat.completions.create(
        model="ok", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("a streamed completion", text == EXPECTED, text)
    check("streamed finish reason", [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"])
    usage = [c.usage for c in chunks if c.usage is not None]
    check("include_usage: one usage chunk, last, with no choices", len(usage) == 1 and chunks[-1].usage is not None and chunks[-1].choices == [], usage)

    plain = list(client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}], stream=True))
    check("without include_usage no usage", all(c.usage is None for c in plain))

    fallback = list(client.chat.completions.create(model="cut-then-ok", messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in fallback if c.choices)
    check("a mid-stream fallback: the text whole and unrepeated", text == EXPECTED, text)
    check("the fallback's chunks name both models", {c.model for c in fallback} == {"cut", "ok"}, {c.model for c in fallback})

    client.chat.completions.create(
        model="ok", messages=[{"role": "user", "content": "params"}], max_completion_tokens=3, temperature=0.5, stop=["END"])
    sent = [r["body"] for r in fake_requests(fake_root) if r["body"].get("messages", [{}])[-1].get("content") == "params"]
    check("max_completion_tokens, temperature and stop reach the model",
          sent and sent[-1].get("max_tokens") == 3 and sent[-1].get("temperature") == 0.5 and sent[-1].get("stop") == ["END"], sent)
    short = client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    check("finish reason length", short.choices[0].finish_reason == "length", short.choices[0].finish_reason)

    try:
        openai.OpenAI(base_url=base + "/v1", api_key="sk-keel-wrong", max_retries=0).models.list()
        check("a wrong key is refused", False)
    except openai.AuthenticationError as error:
        check("a wrong key is refused", error.status_code == 401 and "sk-keel-wrong" not in str(error), str(error))
    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        check("an unknown model is 404", False)
    except openai.NotFoundError as error:
        check("an unknown model is 404", error.code == "model_not_found", error.code)
    try:
        client.chat.completions.create(model="ok", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
        check("a tool message is 400", False)
    except openai.BadRequestError as error:
        check("a tool message is 400", error.status_code == 400 and error.param == "messages[0].role", (error.param, str(error)))
    try:
        text = ""
        for chunk in client.chat.completions.create(model="inband", messages=[{"role": "user", "content": "hi"}], stream=True):
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        check("an error after the stream starts is raised", False, text)
    except openai.APIError as error:
        check("an error after the stream starts is raised", text == "tok0 tok1 " and not isinstance(error, openai.APIStatusError), (text, repr(error)))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def create(base, key, model):
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    response = client.responses.create(model=model, input="count", instructions="Count.", background=True)
    assert response.status in ("queued", "in_progress"), response.status
    assert response.background is True
    print(response.id)
    return 0


def stream(base, key, response_id, until_deltas=None, starting_after=None):
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    arguments = {"stream": True}
    if starting_after is not None:
        arguments["starting_after"] = starting_after
    text, sequences, types, deltas, final = "", [], [], 0, None
    events = client.responses.retrieve(response_id, **arguments)
    for event in events:
        sequences.append(event.sequence_number)
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
            deltas += 1
            if until_deltas is not None and deltas >= until_deltas:
                break
        if event.type in ("response.completed", "response.failed", "response.incomplete"):
            final = event.response.model_dump(mode="json")
    events.close()
    print(json.dumps({"text": text, "last_sequence": sequences[-1] if sequences else None, "sequences": sequences, "types": types, "final": final}))
    return 0


def main(argv):
    command = argv[1]
    if command == "completions":
        return completions(argv[2], argv[3], argv[4])
    if command == "create":
        return create(argv[2], argv[3], argv[4])
    if command == "stream":
        until = int(argv[argv.index("--until-deltas") + 1]) if "--until-deltas" in argv else None
        after = int(argv[argv.index("--starting-after") + 1]) if "--starting-after" in argv else None
        return stream(argv[2], argv[3], argv[4], until, after)
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
