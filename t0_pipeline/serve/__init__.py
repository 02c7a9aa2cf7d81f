"""The conversational service: conversation store, agent turn logic, HTTP API and chat page."""
