"""The action agent: a registry of tools (read diagnostics, write actions), planners that choose
tool calls (deterministic rules, or the model's OpenAI tool calls), pending actions with a
server-side dry-run, execution through the ``ops_action`` DAG only, and an append-only audit."""
