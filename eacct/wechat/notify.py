"""WeChat template messages (模板消息): bound members also get their personal messages on the phone (rule 18).

A second channel of `eacct.share.notify.MessageCenterNotifier`, so share code does not change. Inside the
event's transaction `personal` only looks up the member's binding and registers the message with
`eacct.db.after_commit`: a rolled-back event sends nothing, and WeChat's speed never holds a lock. After the
commit the send runs as a background task (the HTTP answer does not wait for it) on a small dedicated thread
pool with wechatpy's synchronous client; at most `workers` sends run at once and at most `max_pending` wait,
further ones are dropped with a warning (the message center has the message anyway). Failures are logged
without the secret or the access token and never reach the request.

Template fields (a 业务通知-style template with these keys; WeChat ignores keys a template does not have):
`first` = the message title, `keyword1` = the message body, `keyword2` = when it happened (Beijing time,
YYYY-MM-DD HH:MM), `remark` = "详情请在 e会计【消息中心】查看".
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from eacct.config import Settings
from eacct.db import after_commit, utcnow
from eacct.formats import BEIJING
from eacct.members.models import WechatBinding

__all__ = ["REMARK", "WechatTemplateNotifier", "template_data"]

log = logging.getLogger("eacct.wechat.notify")

REMARK = "详情请在 e会计【消息中心】查看"
_SECRET_PARAMS = re.compile(r"(secret|access_token)=[^&\s'\"]+")


def template_data(title: str, body: str, when=None) -> dict:
    """The `data` of a template message for one personal message."""
    when = (when or utcnow()).astimezone(BEIJING)
    return {
        "first": {"value": title},
        "keyword1": {"value": body},
        "keyword2": {"value": when.strftime("%Y-%m-%d %H:%M")},
        "remark": {"value": REMARK},
    }


class WechatTemplateNotifier:
    """The WeChat channel of personal messages: a template message to the member's bound WeChat, if any."""

    def __init__(self, settings: Settings, *, workers: int = 2, max_pending: int = 1000,
                 timeout: float = 10.0) -> None:
        if not self.configured(settings):
            raise ValueError("WeChat template messages need the appid, the secret and the template id")
        self.template_id = settings.wechat_template_id
        # The message opens the message center page (消息中心) when the service's public address is known.
        self.link = f"{settings.public_url.rstrip('/')}/wx/messages" if settings.public_url else None
        self._settings, self._timeout = settings, timeout
        self.max_pending = max_pending
        self._secret = settings.wechat_secret
        # Imported here: wechatpy and requests are loaded only by a server that sends template messages.
        from eacct.wechat.client import WechatApiClient

        self._client = WechatApiClient(settings.wechat_appid, settings.wechat_secret, settings.wechat_api_base, timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eacct-wechat")
        self._slots = asyncio.Semaphore(workers)
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    def share_token_through(self, sessions) -> None:
        """From now on keep the access token in the database, shared with every other process (call on the
        event loop that owns `sessions`, once the database is open)."""
        from eacct.wechat.client import WechatApiClient
        from eacct.wechat.tokens import DatabaseTokenStorage  # wechatpy, like the client: only when configured

        storage = DatabaseTokenStorage(sessions, asyncio.get_running_loop())
        self._client = WechatApiClient(self._settings.wechat_appid, self._settings.wechat_secret,
                                       self._settings.wechat_api_base, self._timeout, storage)

    @staticmethod
    def configured(settings: Settings) -> bool:
        """Whether settings turn this channel on."""
        return bool(settings.wechat_appid and settings.wechat_secret and settings.wechat_template_id)

    async def personal(self, session: AsyncSession, member_id: int, title: str, body: str) -> None:
        openid = await session.scalar(select(WechatBinding.openid).where(WechatBinding.member_id == member_id))
        if openid is None:
            return
        data = template_data(title, body)
        loop = asyncio.get_running_loop()
        after_commit(session, lambda: self._start(loop, member_id, openid, data))

    @property
    def pending(self) -> int:
        """Sends started and not finished (waiting for a slot or on their way)."""
        return len(self._tasks)

    def _start(self, loop: asyncio.AbstractEventLoop, member_id: int, openid: str, data: dict) -> None:
        if self._closed:
            log.warning("WeChat channel closed; template message to member %s not sent", member_id)
            return
        if len(self._tasks) >= self.max_pending:
            log.warning("%s WeChat template messages waiting; message to member %s dropped", len(self._tasks),
                        member_id)
            return
        task = loop.create_task(self._send(member_id, openid, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, member_id: int, openid: str, data: dict) -> None:
        try:
            async with self._slots:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._send_now, openid, data)
        except asyncio.CancelledError:
            log.warning("template message to member %s abandoned at shutdown", member_id)
            raise
        except Exception as exc:
            log.warning("template message to member %s failed: %s", member_id, self._describe(exc))
        else:
            log.info("template message sent to member %s", member_id)

    def _send_now(self, openid: str, data: dict) -> None:
        """In a pool thread: send, fetching a new access token once if WeChat refuses the cached one."""
        self._client.with_token_retry(
            lambda: self._client.message.send_template(openid, self.template_id, data, url=self.link))

    def _describe(self, exc: Exception) -> str:
        """What went wrong, for the log: WeChat's errcode and errmsg, or the error with secrets masked (request
        errors quote the URL, and the token URL carries the secret). Never a traceback: chained exceptions
        would quote it too."""
        from eacct.wechat.client import WeChatClientException

        if isinstance(exc, WeChatClientException):
            if exc.errcode is None and exc.response is not None:
                text = f"HTTP {exc.response.status_code}"
            else:
                text = f"errcode {exc.errcode}: {exc.errmsg}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = _SECRET_PARAMS.sub(r"\1=***", text)
        return text.replace(self._secret, "***") if self._secret else text

    async def drain(self) -> None:
        """Wait until every send started so far (and any started meanwhile) has finished, sent or failed."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking sends; wait up to `timeout` seconds for those under way, then abandon the rest."""
        self._closed = True
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.warning("%s WeChat template messages not sent at shutdown", len(late))
        # A thread still inside a request finishes within the client's timeout; nobody waits for it.
        self._pool.shutdown(wait=False, cancel_futures=True)
