"""Local servers speaking each provider's protocol, one per test that asks for it."""

import pytest

from tests.llm_servers import ScriptedLLM


@pytest.fixture
def openai_server():
    s = ScriptedLLM("openai").start()
    yield s
    s.stop()


@pytest.fixture
def anthropic_server():
    s = ScriptedLLM("anthropic").start()
    yield s
    s.stop()
