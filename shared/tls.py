"""TLS to the broker and to MongoDB, from settings, with clear errors for what cannot work.

`amqp_ssl_options` gives what kombu, nameko (`AMQP_SSL`) and py-amqp take as `ssl`;
`mongo_tls_options` gives the keyword arguments of `MongoClient`. Both check the combination
at start-up, so a missing file or an `amqp://` URI with certificates fails loudly instead of
connecting in clear text or failing in the handshake.
"""
from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qsl, urlsplit

from shared.config import Config
from shared.messaging.broker_uri import first_node


def _readable(setting: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"{setting} names {path!r}, which is not a readable file")


def amqp_ssl_options(config: Config) -> dict | None:
    """None for a plain `amqp://` URI; for `amqps://`, py-amqp's TLS options: the certificate
    is always verified (CA file, or the system's CAs) and the host name checked."""
    uri = config.get("AMQP_URI")
    ca, cert, key = (config.get("AMQP_SSL_CA_FILE"), config.get("AMQP_SSL_CERT_FILE"),
                     config.get("AMQP_SSL_KEY_FILE"))
    scheme = uri.split("://", 1)[0].lower()
    if scheme != "amqps":
        if ca or cert or key:
            raise ValueError("AMQP_SSL_* files are set but AMQP_URI is not amqps:// "
                             "(use amqps://host:5671/vhost to connect with TLS)")
        return None
    if bool(cert) != bool(key):
        raise ValueError("AMQP_SSL_CERT_FILE and AMQP_SSL_KEY_FILE go together (mutual TLS "
                         "needs both the certificate and its key)")
    options: dict = {"cert_reqs": ssl.CERT_REQUIRED}
    # The first host of the URI (kombu's failover lists are `;`-separated): SNI and the name
    # the certificate must carry.
    host = urlsplit(first_node(uri)).hostname
    if host:
        options["server_hostname"] = host
    for setting, option, path in (("AMQP_SSL_CA_FILE", "ca_certs", ca),
                                  ("AMQP_SSL_CERT_FILE", "certfile", cert),
                                  ("AMQP_SSL_KEY_FILE", "keyfile", key)):
        if path:
            _readable(setting, path)
            options[option] = path
    return options


_TLS_OFF = {"false", "0", "no"}


def mongo_tls_options(config: Config) -> dict:
    """Keyword arguments for `MongoClient`: TLS files from the settings (TLS can also be
    turned on in MONGO_URI with `tls=true&tlsCAFile=...`, which pymongo reads itself)."""
    uri = config.get("MONGO_URI")
    ca, cert_key = config.get("MONGO_TLS_CA_FILE"), config.get("MONGO_TLS_CERT_KEY_FILE")
    if not (ca or cert_key):
        return {}
    query = {k.lower(): v.lower() for k, v in parse_qsl(urlsplit(uri).query)}
    if query.get("tls", query.get("ssl")) in _TLS_OFF:
        raise ValueError("MONGO_TLS_* files are set but MONGO_URI says tls=false")
    options: dict = {"tls": True}
    if ca:
        _readable("MONGO_TLS_CA_FILE", ca)
        options["tlsCAFile"] = ca
    if cert_key:
        _readable("MONGO_TLS_CERT_KEY_FILE", cert_key)
        options["tlsCertificateKeyFile"] = cert_key
    return options
