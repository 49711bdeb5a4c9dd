"""The message a run's end posts: Slack-compatible JSON, `text` plus Block Kit `blocks`.

Slack incoming webhooks, and the chat tools that accept their format (Mattermost, Rocket.Chat,
Discord's `/slack` endpoint), show `blocks` where they can and `text` where they cannot (and in
the notification itself), so `text` says the whole outcome in one line. Everything that comes
from the run (names, the summary, the error) is escaped for Slack's mrkdwn (`&`, `<`, `>`), so
it can neither break the markup nor forge a link, and cut to Slack's limits (150 characters in
a header, 3000 in a section, 2000 in a field), so an oversized summary cannot make Slack
refuse the whole message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
OUTCOMES = {
    "SUCCEEDED": (":white_check_mark:", "succeeded"),
    "CACHED": (":white_check_mark:", "succeeded (from cache)"),
    "SKIPPED": (":white_circle:", "was skipped"),
    "FAILED": (":x:", "failed"),
    "CANCELLED": (":no_entry_sign:", "was cancelled"),
    "CANCELED": (":no_entry_sign:", "was cancelled"),
}
"""The states KFP hands an exit task: kfp.local and the v2 driver say SUCCEEDED or FAILED; KFP
backends that track tasks also CACHED (every task of the handler came from the cache) and
SKIPPED, and spell cancellation CANCELED where the SDK's docs say CANCELLED."""
SUCCEEDED_STATES = ("SUCCEEDED", "CACHED", "SKIPPED")


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as KFP's exit handler reports it (`dsl.PipelineTaskFinalStatus`).

    Attributes:
        pipeline: The pipeline's name.
        state: One of `OUTCOMES` (any other state is shown as it is).
        run_id: The KFP run's id.
        run_name: The KFP run's name.
        failed_task: The task whose status this is (the exit handler's group).
        error_message: KFP's error message when the run failed; "" otherwise.
    """

    pipeline: str
    state: str
    run_id: str = ""
    run_name: str = ""
    failed_task: str = ""
    error_message: str = ""

    @property
    def outcome(self) -> str:
        """ "succeeded", "failed", "was cancelled", or the state in lower case."""
        return OUTCOMES.get(self.state, ("", self.state.lower() or "ended"))[1]


def run_url(kfp_ui_url: str, run_id: str) -> str:
    """The run's page in the KFP UI, e.g. `https://kubeflow.example.com/_/pipeline` ->
    `https://kubeflow.example.com/_/pipeline/#/runs/details/<run id>`; "" without a base URL."""
    if not kfp_ui_url.strip() or not run_id:
        return ""
    return f"{kfp_ui_url.strip().rstrip('/')}/#/runs/details/{run_id}"


def run_end_message(run: RunEnd, summary: str = "", kfp_ui_url: str = "") -> dict[str, Any]:
    """The Slack-compatible message of `run`'s end.

    Args:
        run: How the run ended.
        summary: What the run decided: a JSON object (one line per key), a JSON array (one line
            per item), or plain text; "" for nothing.
        kfp_ui_url: Base URL of the KFP UI; "" for no link.
    """
    icon, _ = OUTCOMES.get(run.state, (":grey_question:", ""))
    title = f"{run.pipeline or 'pipeline'} {run.outcome}"
    shown_run = run.run_name or run.run_id or "unknown run"
    link = run_url(kfp_ui_url, run.run_id)
    text = f"{title}: run {shown_run}" + (f" ({link})" if link else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{icon} {title}", HEADER_LIMIT)},
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Run*\n{_escaped(shown_run)}"),
                _mrkdwn(f"*Run id*\n`{_escaped(run.run_id or '-')}`"),
                _mrkdwn(f"*Status*\n{_escaped(run.state or 'unknown')}"),
            ],
        },
    ]
    if run.state not in SUCCEEDED_STATES and (run.error_message or run.failed_task):
        error = run.error_message or f"task {run.failed_task} did not succeed"
        blocks.append(_section("*Error*\n" + _escaped(error)))
    decided = _summary_lines(summary)
    if decided:
        blocks.append(_section("*Decided*\n" + decided))
    if link:
        blocks.append(_section(f"<{_escaped(link)}|Open the run in Kubeflow Pipelines>"))
    return {"text": text, "blocks": blocks}


def _summary_lines(summary: str) -> str:
    """The summary as mrkdwn lines: `• *key*: value` per key of an object, `• item` per item of
    an array, else the text itself."""
    text = summary.strip()
    if not text:
        return ""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return _escaped(text)
    if isinstance(document, dict):
        lines = [f"• *{_escaped(str(key))}*: {_value(value)}" for key, value in document.items()]
    elif isinstance(document, list):
        lines = [f"• {_value(item)}" for item in document]
    else:
        lines = [_value(document)]
    return "\n".join(lines) or "nothing"


def _value(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return _escaped(shown)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = FIELD_LIMIT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text, SECTION_LIMIT)}
