"""``/v1/responses`` (OpenAI's Responses API): input items to a :class:`GenRequest`, a choice to a response.

A stored response keeps its whole conversation (:mod:`.store`), so ``previous_response_id`` continues
it. The stream's events are :mod:`.events`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from edge_run.api.openai.schemas import JsonObjectFormat
from edge_run.api.responses.schemas import (
    FunctionCallItem,
    FunctionTool,
    IncompleteDetails,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    InputTokensDetails,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    Refusal,
    ResponseJsonSchemaFormat,
    ResponseObject,
    ResponseRequest,
    ResponseUsage,
    SummaryText,
    TextConfig,
)
from edge_run.engine import MEDIA_MARKER, MediaInput
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import Choice, call_input, collect
from edge_run.serving.media import image_input
from edge_run.serving.reasoning import from_effort
from edge_run.serving.request import (
    CallRecord,
    GenRequest,
    JsonOutput,
    Turn,
    arguments,
    function_spec,
    join_text,
    new_id,
)

if TYPE_CHECKING:
    from edge_run.api.responses.schemas import ContentPart, ResponseError
    from edge_run.api.responses.store import ResponseStore
    from edge_run.serving.assembly import Block, Run, Totals

__all__ = ["Output", "ResponseJob", "Status", "complete", "finish", "prepare", "response"]

Status = Literal["in_progress", "completed", "incomplete", "failed"]


def _text(content: str | list[ContentPart] | None, param: str) -> str:
    """Text only (a function call's output): an image there is refused."""
    text, media = _content(content, param)
    if media:
        raise InvalidRequest("images go in user messages", param=media[0].param)
    return text


def _content(content: str | list[ContentPart] | None, param: str) -> tuple[str, tuple[MediaInput, ...]]:
    """A message's text, an ``input_image`` (or an image ``input_file``) a ``MEDIA_MARKER`` where it stands, and its
    images."""
    if not isinstance(content, list):
        return content or "", ()
    texts: list[str | None] = []
    media: list[MediaInput] = []
    for j, p in enumerate(content):
        if (url := _image_url(p)) is not None:
            media.append(image_input(url, f"{param}[{j}]"))
            texts.append(MEDIA_MARKER)
        elif isinstance(p, InputText | OutputText | Refusal):
            texts.append(p.refusal if isinstance(p, Refusal) else p.text)
        else:
            texts.append(None)  # a file, or an image by file id: refused
    return join_text(texts, param), tuple(media)


def _image_url(part: ContentPart) -> str | None:
    """An ``input_image``'s URL, or an ``input_file``'s data (a file of another type than an image is refused)."""
    if isinstance(part, InputImage):
        return part.image_url
    return part.file_data or part.file_url if isinstance(part, InputFile) else None


def _thought(item: InputItem) -> str:
    """A reasoning item's text: its whole thought, or else its summary."""
    content = item.content if isinstance(item.content, list) else []
    parts = [p.text for p in content if isinstance(p, ReasoningText)]
    return "\n".join(parts or [s.text for s in item.summary or ()])


def _turns(items: str | list[InputItem]) -> list[Turn]:
    if isinstance(items, str):
        return [Turn("user", items)]
    turns: list[Turn] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        # a reasoning item opens the assistant turn whose message or calls follow it
        thinking = bool(turns) and turns[-1].role == "assistant" and not turns[-1].content and not turns[-1].calls
        if item.type == "reasoning":
            turns.append(Turn("assistant", reasoning=_thought(item)))
        elif item.type == "message":
            if item.role is None:
                raise InvalidRequest(f"`{at}.role` is required for a message", param=f"{at}.role")
            text, media = _content(item.content, f"{at}.content")
            if media and item.role != "user":
                raise InvalidRequest("only user messages may hold images", param=f"{at}.content")
            turn = Turn("system" if item.role == "developer" else item.role, text, media=media)
            if thinking and turn.role == "assistant":
                turns[-1] = dataclasses.replace(turns[-1], content=turn.content)
            else:
                turns.append(turn)
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise InvalidRequest(f"`{at}`: a function_call needs `call_id` and `name`", param=at)
            call = CallRecord(item.call_id, item.name, arguments(item.arguments or "{}", f"{at}.arguments"))
            if turns and turns[-1].role == "assistant":  # calls after a message are that message's calls
                turns[-1] = dataclasses.replace(turns[-1], calls=(*turns[-1].calls, call))
            else:
                turns.append(Turn("assistant", calls=(call,)))
        elif item.type == "function_call_output":
            if not item.call_id:
                raise InvalidRequest(f"`{at}.call_id` is required for a function_call_output", param=f"{at}.call_id")
            turns.append(Turn("tool", _text(item.output, f"{at}.output"), call_id=item.call_id))
        else:
            raise InvalidRequest(
                f"input items of type `{item.type}` are not supported (only messages, `reasoning`, `function_call` "
                "and `function_call_output`)",
                param=f"{at}.type",
            )
    return turns


def _tool(tool: FunctionTool, i: int) -> dict[str, object]:
    if tool.type != "function":
        raise InvalidRequest(
            f"tools of type `{tool.type}` are not supported; only `function` tools are", param=f"tools[{i}].type"
        )
    if tool.name is None:
        raise InvalidRequest(f"`tools[{i}].name` is required", param=f"tools[{i}].name")
    return function_spec(tool.name, tool.description, tool.parameters)


def _refuse_unsupported(req: ResponseRequest) -> None:
    refused = {
        "background": req.background,
        "conversation": req.conversation is not None,
        "truncation": req.truncation == "auto",
        "top_logprobs": bool(req.top_logprobs),
    }
    for param, set_ in refused.items():
        if set_:
            raise InvalidRequest(f"`{param}` is not supported by this server", param=param)


@dataclass
class ResponseJob:
    """A responses request on its way: the internal request, and what storing its answer needs."""

    req: ResponseRequest
    gen: GenRequest
    history: list[Turn]  # the conversation without instructions: what a later response continues
    store: ResponseStore
    owner: str | None  # the key that asked (see ResponseStore)
    id: str = field(default_factory=lambda: new_id("resp_", 24))
    created_at: int = field(default_factory=lambda: int(time.time()))


def prepare(req: ResponseRequest, store: ResponseStore, owner: str | None) -> ResponseJob:
    """Check and translate, before any model is loaded; an unknown ``previous_response_id`` is a 404."""
    _refuse_unsupported(req)
    history: list[Turn] = []
    if req.previous_response_id is not None:
        history = list(store.get(req.previous_response_id, owner, "previous_response_id").turns)
    history += _turns(req.input)
    fmt = req.text.format if req.text is not None else None
    output = None
    if isinstance(fmt, JsonObjectFormat):
        output = JsonOutput(None, "text.format")
    elif isinstance(fmt, ResponseJsonSchemaFormat):
        output = JsonOutput(fmt.schema or {"type": "object"}, "text.format")
    choice = req.tool_choice
    gen = GenRequest(
        model=req.model,
        sampling=req,
        turns=([Turn("system", req.instructions)] if req.instructions else []) + history,
        tools=[_tool(t, i) for i, t in enumerate(req.tools or ())],
        tool_choice=choice if choice is None or isinstance(choice, str) else choice.name,
        output=output,
        max_tokens=req.max_output_tokens,
        thinking=from_effort(req.reasoning.effort if req.reasoning is not None else None, req.reasoning_budget),
        template_kwargs=req.chat_template_kwargs,
    )
    return ResponseJob(req=req, gen=gen, history=history, store=store, owner=owner)


class Output:
    """The response's output items, built from the choice's blocks, with their ids."""

    def __init__(self, choice: Choice | None = None) -> None:
        self.choice = choice or Choice()
        self._ids: dict[int, str] = {}

    def id(self, block: Block) -> str:
        if block.index not in self._ids:
            prefix = "rs_" if block.reasoning else "msg_" if block.call_id is None else "fc_"
            self._ids[block.index] = new_id(prefix, 24)
        return self._ids[block.index]

    def item(self, block: Block, done: bool = True) -> ReasoningItem | OutputMessage | FunctionCallItem:
        item_id = self.id(block)
        status: Literal["in_progress", "completed", "incomplete"] = "in_progress"
        if done:
            cut = self.choice.finish_reason == "length" and block is self.choice.blocks[-1]
            status = "incomplete" if cut else "completed"
        if block.reasoning:  # a local model's summary is its whole thought: clients that read only summaries see it
            whole, summary = ([ReasoningText(block.text)], [SummaryText(block.text)]) if done else ([], [])
            return ReasoningItem(id=item_id, status=status, content=whole, summary=summary)
        if block.call_id is None:
            return OutputMessage(id=item_id, status=status, content=[OutputText(text=block.text)] if done else [])
        assert block.name is not None
        args = block.text if done else ""
        return FunctionCallItem(id=item_id, call_id=block.call_id, name=block.name, arguments=args, status=status)

    def items(self) -> list[ReasoningItem | OutputMessage | FunctionCallItem]:
        return [self.item(b) for b in self.choice.blocks]

    @property
    def status(self) -> Status:
        return "incomplete" if self.choice.finish_reason == "length" else "completed"


def response(
    job: ResponseJob, status: Status, output: Output, totals: Totals | None = None, error: ResponseError | None = None
) -> ResponseObject:
    req = job.req
    usage = None
    if totals is not None:
        usage = ResponseUsage(
            input_tokens=totals.prompt_tokens,
            output_tokens=totals.completion_tokens,
            total_tokens=totals.prompt_tokens + totals.completion_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=totals.cached_tokens),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=totals.reasoning_tokens),
        )
    return ResponseObject(
        id=job.id,
        created_at=job.created_at,
        model=req.model,
        status=status,
        output=output.items() if status in ("completed", "incomplete") else [],
        error=error,
        incomplete_details=IncompleteDetails("max_output_tokens") if status == "incomplete" else None,
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        store=req.store,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        text=req.text or TextConfig(),
        tool_choice=req.tool_choice or "auto",
        tools=req.tools or [],
        usage=usage,
        user=req.user,
        metadata=req.metadata or {},
    )


def finish(job: ResponseJob, output: Output, totals: Totals) -> ResponseObject:
    """The final response; stored, with its conversation, when the request asked for that."""
    final = response(job, output.status, output, totals)
    if job.req.store:
        calls = tuple(CallRecord(c.id, c.name, call_input(c.arguments)) for c in output.choice.calls)
        said = Turn("assistant", output.choice.text, reasoning=output.choice.reasoning, calls=calls)
        job.store.put(final, [*job.history, said], job.owner)
    return final


async def complete(job: ResponseJob, run: Run) -> ResponseObject:
    [choice] = await collect(run)
    return finish(job, Output(choice), run.totals)
