"""The event contract (DESIGN §4): schemas as pydantic models, and the topic catalogue."""
