"""Everything the pages and the API share, built once per app from the settings."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from colbert_att_assistant.assistant import Assistant
from colbert_att_assistant.assistant.memory import SQLiteMemory
from colbert_att_assistant.webapp.client_address import request_client
from colbert_att_assistant.webapp.conversation_log import ConversationLog
from colbert_att_assistant.webapp.generation import GenerationQueue
from colbert_att_assistant.webapp.login_throttle import LoginThrottle
from colbert_att_assistant.webapp.rate_limit import RateLimiter
from colbert_att_assistant.webapp.sessions import SessionRegistry
from colbert_att_assistant.webapp.settings import AppSettings


def generation_slots(settings: AppSettings, capacity: int) -> int:
    """Answers generated at once: as many as the model admits (one for the embedded model, a server's slots), or
    fewer when configured. More would only wait inside the model, where a client is not told its place."""
    return min(settings.generation_slots or capacity, capacity)


@dataclass
class AppServices:
    assistant: Assistant
    settings: AppSettings
    log: ConversationLog
    limiter: RateLimiter
    throttle: LoginThrottle
    memory: SQLiteMemory
    sessions: SessionRegistry
    generation: GenerationQueue
    staff_credentials: tuple[str, str]

    @classmethod
    def build(cls, assistant: Assistant, settings: AppSettings) -> AppServices:
        log = ConversationLog(settings.log_path)
        memory = SQLiteMemory(
            settings.sessions_path, assistant.settings.chat.memory_token_limit, assistant.chat_model.count_tokens
        )
        # The app's own view of the assistant: the same index and model, with memory kept on disk. A copy, so that
        # the caller's object (perhaps serving another app) keeps its own memory.
        assistant = copy.copy(assistant)
        assistant.memory = memory
        return cls(
            assistant=assistant,
            settings=settings,
            log=log,
            limiter=RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_s),
            throttle=LoginThrottle(
                settings.login_max_failures,
                settings.login_window_s,
                settings.login_lockout_s,
                on_lockout=lambda client, failures: log.record_security_event(
                    "login_lockout",
                    client,
                    f"{failures} wrong staff passwords; locked for {settings.login_lockout_s:.0f} s",
                ),
            ),
            memory=memory,
            sessions=SessionRegistry(memory, settings.session_idle_s),
            generation=GenerationQueue(
                generation_slots(settings, assistant.chat_model.capacity),
                settings.queue_size,
                settings.request_deadline_s,
            ),
            staff_credentials=settings.staff_credentials(),
        )

    def client(self, request) -> str:
        return request_client(request, self.settings.trusted_proxies)
