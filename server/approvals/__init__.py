"""Approvals: a human agrees to exactly one statement, once, before it runs (docs/approvals.md).

- `model.py`      the approval value and its statuses
- `binding.py`    what an approval binds to (normalized statement, database, agent, policy version,
                  expiry) and the check a query must pass to use one
- `gate.py`       the query path's `approve` and `consume` stages (composed in server/pipeline.py)
- `request.py`    the request_approval and approval_status stages
- `approvers.py`  who may approve: the Cedar `approve` action for human `User` principals
- `service.py`    deciding, reading and waiting, with audit events and notifications
- `waiting.py`    waiting for a decision (PostgreSQL LISTEN/NOTIFY, in-process events, SQLite poll)
- `webhook.py`    Slack-compatible notifications, in the background with retries
- `http_api.py`   the approver's HTTP API

Nothing here knows MCP; tools/request_approval.py and tools/approval_status.py are the MCP side,
server/approvals_cli.py the command line.
"""
