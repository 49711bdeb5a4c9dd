"""A word when a run ends: a Slack-compatible summary of the run, posted to a webhook.

`message` builds the JSON (`text` plus Block Kit `blocks`: pipeline, run, succeeded or failed,
what was decided, a link to the run in the KFP UI); `webhook` posts it with a timeout and a
bounded retry and never lets a failed delivery fail the run. The pipelines call the
`notify_run_end` component as the exit task of a `dsl.ExitHandler`, which KFP runs whether the
body succeeded or not and hands the body's final status.
"""
