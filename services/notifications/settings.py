"""The environment variables notifications reads beyond the shared library's: mail, SMS, its public
pages, the send loop, message coupons and template limits.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("SMTP_HOST", "localhost", "Mail server notifications sends email through."),
    Setting("SMTP_PORT", "25", "Its port (587 for STARTTLS, 465 for TLS are usual)."),
    Setting("SMTP_SECURITY", "none", "`none`, `starttls` or `tls` (implicit TLS)."),
    Setting("SMTP_USERNAME", "", "SMTP login; empty for none."),
    Setting("SMTP_PASSWORD", "", "SMTP password (secret: set it in the environment)."),
    Setting("SMTP_TIMEOUT_SECONDS", "10", "SMTP connect and reply timeout."),
    Setting("MAIL_FROM", "Woo Companion <noreply@localhost>",
            "Default From of emails (a store's `from_email` setting overrides it)."),
    Setting("MAIL_DOMAIN", "", "Domain of generated Message-IDs (empty: this host's name)."),
    Setting("TWILIO_ACCOUNT_SID", "", "Twilio account SID for SMS (empty: SMS not configured)."),
    Setting("TWILIO_AUTH_TOKEN", "", "Twilio auth token (secret); also validates callbacks."),
    Setting("TWILIO_FROM_NUMBER", "", "The number SMS are sent from (E.164)."),
    Setting("TWILIO_API_BASE", "https://api.twilio.com",
            "Twilio's API root (tests point it at a local stand-in)."),
    Setting("NOTIFY_PUBLIC_URL", "",
            "The public base URL of notifications: what Twilio calls back (behind a proxy, what "
            "Twilio sees; signatures are checked against it) and where the links in messages "
            "lead (https in production). Empty: the URL as the request arrived, no status "
            "callbacks are asked for, and no marketing email goes (it could not carry its "
            "unsubscribe link)."),
    Setting("EMAIL_REPORT_SECRET", "",
            "Secret (a long random string) of the HMAC-SHA256 that signs bounce and complaint reports "
            "posted to notifications' `/email/reports` (docs/suppression.md). Empty: every "
            "report is refused."),
    Setting("NOTIFY_LINK_SECRET", "",
            "Secret (at least 32 characters) that signs the unsubscribe, preference and "
            "email-confirmation links in messages; the same on every notifications instance, "
            "and kept: links signed with another secret answer 404. Empty: a random one per "
            "process (logged), so links stop working at a restart; with an https "
            "NOTIFY_PUBLIC_URL (a real deployment) notifications refuses to start without it."),
    Setting("NOTIFY_UNSUBSCRIBE_MAX_BODY_BYTES", "8192",
            "Largest body the public unsubscribe and preference pages read (413 above)."),
    Setting("NOTIFICATIONS_WEB_SERVER_ADDRESS", "0.0.0.0:8001",
            "Address of notifications' own HTTP endpoints (Twilio callbacks, the unsubscribe "
            "and preference pages, bounce reports, health)."),
    Setting("NOTIFY_POLL_SECONDS", "2", "How often notifications looks for sends that are due."),
    Setting("NOTIFY_MAX_ATTEMPTS", "5", "Attempts of a send that fails transiently before it "
            "is given up."),
    Setting("NOTIFY_RETRY_SECONDS", "60", "Wait before the first retry of a send; doubles "
            "with each attempt."),
    Setting("NOTIFY_LEASE_SECONDS", "120", "How long a claimed send is a sender's; after that a "
            "stopped sender's send is taken over (and, if the provider was being called, not "
            "resent)."),
    Setting("NOTIFY_PROJECTION_BATCH_SIZE", "100",
            "Most events of one kind notifications' projection handlers (customer, order and "
            "segmentation events) apply at once, with one read and one write of the contacts "
            "(1 to 1000; docs/batching.md)."),
    Setting("NOTIFY_PROJECTION_BATCH_WAIT_MS", "50",
            "Longest those handlers wait after a batch's first event for it to fill "
            "(0 to 60000 ms)."),
    Setting("NOTIFY_DATE_RULES_MINUTES", "60",
            "How often birthday and days-since-last-order workflows are checked."),
    Setting("NOTIFY_COUPON_PREFIX", "gift",
            "Prefix of the codes of coupons workflows attach to messages (`gift-7kq2m9xwpa`), "
            "unless the workflow's coupon names its own: 1-12 lower-case letters or digits 2-9."),
    Setting("NOTIFY_COUPON_TIMEOUT_SECONDS", "10",
            "How long a send waits for customer_sync to make its coupon at the shop; past it "
            "the send is retried like a provider's transient failure."),
    Setting("NOTIFY_COUPON_WITHDRAW_SECONDS", "60",
            "How often notifications asks the shop to delete the unused message coupons of "
            "erased customers, and the first wait before a failed deletion is tried again "
            "(doubling)."),
    Setting("NOTIFY_COUPON_WITHDRAW_MAX_SECONDS", "3600",
            "Longest wait between tries to delete an erased customer's message coupon."),
    Setting("TEMPLATE_EMAIL_MAX_CHARS", "200000",
            "Longest rendered part of an email (subject, HTML or text), and longest value a "
            "template may make while rendering one; a template over it is refused when saved or "
            "previewed, and its send fails for good."),
    Setting("TEMPLATE_SMS_MAX_CHARS", "1600",
            "Longest rendered SMS body (Twilio's limit), likewise."),
    Setting("TEMPLATE_RENDER_SECONDS", "1",
            "Longest time rendering one message (all its parts) may take, likewise."),
)
