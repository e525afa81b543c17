"""The sandbox vendors the offline demo runs, one per connector, on fixed loopback ports, and the
accounts that link the demo customer to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from providers.sandbox.anthropic import AnthropicSandbox
from providers.sandbox.azure import AzureSandbox
from providers.sandbox.base import SandboxVendor
from providers.sandbox.deepseek import DeepSeekSandbox
from providers.sandbox.openai import OpenAISandbox
from providers.sandbox.openrouter import OpenRouterSandbox

# Fake, sandbox-only keys: the sandboxes accept them; real vendors never would.
DEMO_KEYS = {
    "openai": {"admin_key": "sk-admin-DEMO-sandbox-not-a-real-key-0001"},
    "anthropic": {"admin_key": "sk-ant-admin01-DEMO-sandbox-not-a-real-key-0001"},
    "openrouter": {"management_key": "sk-or-v1-mgmt-DEMO-sandbox-not-a-real-key-0001"},
    "deepseek": {"api_key": "sk-DEMO-sandbox-not-a-real-key-0001"},
}


@dataclass(frozen=True)
class DemoSandbox:
    vendor: str
    label: str
    offset: int  # port = SANDBOX_PORT_BASE + offset
    build: Callable[[], SandboxVendor]
    api_path: str  # appended to the server address to form the account's api_base

    @property
    def port(self) -> int:
        return int(settings.SANDBOX_PORT_BASE) + self.offset

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self) -> dict[str, str]:
        if self.vendor == "azure_openai":
            return AzureSandbox().credentials(self.url)
        return DEMO_KEYS[self.vendor]


DEMO_SANDBOXES = (
    DemoSandbox("openai", "OpenAI (sandbox)", 0, OpenAISandbox, "/v1"),
    DemoSandbox("anthropic", "Anthropic (sandbox)", 1, AnthropicSandbox, ""),
    DemoSandbox("azure_openai", "Azure OpenAI (sandbox)", 2, AzureSandbox, ""),
    DemoSandbox("openrouter", "OpenRouter (sandbox)", 3, OpenRouterSandbox, "/api/v1"),
    DemoSandbox("deepseek", "DeepSeek (sandbox)", 4, DeepSeekSandbox, ""),
)
