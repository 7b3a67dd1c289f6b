"""The admin of agents: staff choose each agent's provider, model, prompt and tools.

An agent's API key is a secret: the form takes a new one but never shows the
stored one, and no list or page of the admin prints it. The default agent
follows the environment (agents.catalog), so its provider fields are
read-only here, and it cannot be deleted.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agents.catalog import default_agent
from agents.tools import TOOLS
from chat.models import Agent

# Follow the environment on the default agent (agents.catalog.default_agent).
ENVIRONMENT_FIELDS = ("name", "provider", "base_url", "model", "tools")


class AgentForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the stored key. The stored key is never shown.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")
    tools = forms.MultipleChoiceField(
        required=False,
        choices=[(name, name) for name in TOOLS],
        widget=forms.CheckboxSelectMultiple,
        help_text="The tools this agent may call.",
    )

    class Meta:
        model = Agent
        fields = ["name", "description", "provider", "base_url", "api_key", "model", "system_prompt", "tools"]

    def clean_api_key(self) -> str:
        """An empty field keeps the stored key (the form never receives it back)."""
        new = self.cleaned_data.get("api_key") or ""
        return new or (self.instance.api_key if self.instance.pk else "")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("clear_api_key"):
            cleaned["api_key"] = ""
        if cleaned.get("provider") == Agent.Provider.OPENAI and not cleaned.get("model"):
            self.add_error("model", "An OpenAI-compatible agent needs a model name.")
        return cleaned


class DefaultAgentForm(forms.ModelForm):
    """The default agent: only what the environment does not set. Its key field does not exist."""

    class Meta:
        model = Agent
        fields = ["description", "system_prompt"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ("name", "provider", "model", "is_default", "tool_list", "has_key")
    search_fields = ("name", "description", "model")

    @admin.display(description="tools")
    def tool_list(self, obj: Agent) -> str:
        return ", ".join(obj.tools or ()) or "-"

    @admin.display(description="key set", boolean=True)
    def has_key(self, obj: Agent) -> bool:
        return bool(obj.api_key)

    def get_readonly_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        return ENVIRONMENT_FIELDS if obj is not None and obj.is_default else ()

    def get_form(self, request: HttpRequest, obj: Agent | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None and obj.is_default:
            kwargs["form"] = DefaultAgentForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Agent | None = None) -> Any:
        if obj is not None and obj.is_default:
            return ["description", "system_prompt", *ENVIRONMENT_FIELDS]
        return super().get_fields(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        default_agent()  # the list always shows the default agent, in step with the environment
        return super().get_queryset(request)

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        if obj is not None and obj.is_default:
            return False
        return super().has_delete_permission(request, obj)
