"""notifications put together: its repositories, channels, sender, link signer and ports made
once from its database and config, so entrypoints and the background tasks share one of each;
a deployment that cannot sign links or has a bad coupon prefix does not start."""
from __future__ import annotations

from dataclasses import dataclass

from nameko.exceptions import MethodNotFound, RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo.collection import Collection
from pymongo.database import Database

from services.notifications import links as ln
from services.notifications import twilio_hooks
from services.notifications.bounded_sandbox import RenderLimits
from services.notifications.channels import EmailChannel, SmsChannel, SmtpSettings, TwilioSettings
from services.notifications.merges import ContactMerges
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from services.notifications.suppression import Suppressions
from shared.config import Config
from shared.coupon_withdrawals import WithdrawalPolicy
from shared.coupons import check_prefix
from shared.customers import CustomerCheck, customer_sync_over_rpc
from shared.errors import Unavailable
from shared.tls import amqp_ssl_options


class CouponsOverRpc:
    """customer_sync's `ensure_coupon` and `delete_coupon` for the send loop: a managed thread
    has no worker to hold an RpcProxy, so each call opens a standalone one. No answer within
    NOTIFY_COUPON_TIMEOUT_SECONDS, or no customer_sync to ask, is Unavailable (the send
    waits and retries); customer_sync's own errors pass through as they are."""

    def __init__(self, config: Config, timeout: float) -> None:
        self.config = {"AMQP_URI": config.get("AMQP_URI"), "serializer": "json",
                       "AMQP_SSL": amqp_ssl_options(config)}
        self.timeout = timeout

    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None) -> dict:
        return self._call("ensure_coupon", store_id, coupon, customer_id)

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict:
        return self._call("delete_coupon", store_id, code, meta)

    def _call(self, method: str, *args: object) -> dict:
        try:
            with ClusterRpcProxy(self.config, timeout=self.timeout) as proxy:
                return getattr(proxy.customer_sync, method)(*args)
        except (RpcTimeout, UnknownService, MethodNotFound, OSError) as exc:
            raise Unavailable(f"customer_sync did not answer {method}: "
                              f"{type(exc).__name__}: {exc}") from None


def sender_for(storage: NotificationsStorage, config: Config,
               links: ln.PublicLinks | None = None) -> Sender:
    email = EmailChannel(SmtpSettings(
        host=config.get("SMTP_HOST"), port=config.int("SMTP_PORT"),
        security=config.get("SMTP_SECURITY"), username=config.get("SMTP_USERNAME"),
        password=config.get("SMTP_PASSWORD"), timeout=config.float("SMTP_TIMEOUT_SECONDS"),
        sender=config.get("MAIL_FROM")))
    sms = SmsChannel(TwilioSettings(
        account_sid=config.get("TWILIO_ACCOUNT_SID"), auth_token=config.get("TWILIO_AUTH_TOKEN"),
        from_number=config.get("TWILIO_FROM_NUMBER"), api_base=config.get("TWILIO_API_BASE"),
        timeout=config.float("SMTP_TIMEOUT_SECONDS")))
    public = config.get("NOTIFY_PUBLIC_URL").rstrip("/")
    return Sender(storage, email, sms, SenderSettings(
        max_attempts=config.int("NOTIFY_MAX_ATTEMPTS"),
        retry_seconds=config.float("NOTIFY_RETRY_SECONDS"),
        lease_seconds=config.float("NOTIFY_LEASE_SECONDS"),
        mail_domain=config.get("MAIL_DOMAIN"),
        status_callback_url=f"{public}{twilio_hooks.STATUS_PATH}" if public else None,
        render_limits=RenderLimits.from_config(config),
        coupon_prefix=check_prefix(config.get("NOTIFY_COUPON_PREFIX")), links=links),
        shop_coupons=CouponsOverRpc(config, config.float("NOTIFY_COUPON_TIMEOUT_SECONDS")))


@dataclass(frozen=True)
class Notifications:
    """What notifications' workers and tasks see. A `Notifier` gathers what one call touched,
    so each call gets its own; customer_sync is asked through the calling worker's proxy."""

    storage: NotificationsStorage
    merges: ContactMerges
    render_limits: RenderLimits
    signer: ln.LinkSigner
    sender: Sender
    suppressions: Suppressions
    shop_coupons: CouponsOverRpc
    withdrawal_policy: WithdrawalPolicy
    twilio: twilio_hooks.HookConfig
    customer_check_seconds: float

    def ensure_indexes(self) -> None:
        self.storage.ensure_indexes()

    def outbox_collections(self) -> list[Collection]:
        return self.storage.outbox_collections()

    def notifier(self) -> Notifier:
        return Notifier(self.storage, render_limits=self.render_limits)

    def customer_check(self, customer_sync) -> CustomerCheck:
        return CustomerCheck(customer_sync_over_rpc(customer_sync, self.customer_check_seconds))


def build(database: Database, config: Config) -> Notifications:
    """notifications from its own database and settings."""
    try:  # a bad prefix stops the service at start, not every coupon at send time
        check_prefix(config.get("NOTIFY_COUPON_PREFIX"))
    except ValueError as exc:
        raise ValueError(f"NOTIFY_COUPON_PREFIX: {exc}") from None
    storage = NotificationsStorage(database)
    public_url = config.get("NOTIFY_PUBLIC_URL").rstrip("/")
    signer = ln.signer_from_settings(config.get("NOTIFY_LINK_SECRET"), public_url)
    links = ln.PublicLinks(signer, public_url) if public_url else None  # no address, no link
    return Notifications(
        storage=storage, merges=ContactMerges(storage),
        render_limits=RenderLimits.from_config(config), signer=signer,
        sender=sender_for(storage, config, links), suppressions=Suppressions(storage.suppressions),
        shop_coupons=CouponsOverRpc(config, config.float("NOTIFY_COUPON_TIMEOUT_SECONDS")),
        withdrawal_policy=WithdrawalPolicy(config.float("NOTIFY_COUPON_WITHDRAW_SECONDS"),
                                           config.float("NOTIFY_COUPON_WITHDRAW_MAX_SECONDS")),
        twilio=twilio_hooks.HookConfig(auth_token=config.get("TWILIO_AUTH_TOKEN"),
                                       public_url=config.get("NOTIFY_PUBLIC_URL")),
        customer_check_seconds=config.float("CUSTOMER_CHECK_TIMEOUT_SECONDS"))
