"""An SMTP server for tests/lua/test_smtp.lua, on Debian's python3-aiosmtpd.

    /usr/bin/python3 tests/python/smtp_sink.py --out DIR [--starttls CERT KEY] [--smtps CERT KEY]
                                               [--auth USER:PASSWORD]

Listens on a free loopback port and prints "listening PORT" once it accepts connections. Each
message it accepts is written to DIR/N.json: {"mail_from", "rcpt_tos", "data" (the message as
received, CRLF line ends), "tls" (STARTTLS or SMTPS was in use), "login" (who authenticated),
and what Python's own RFC 5322 parser makes of it: "headers" (decoded), "body" (the text/plain
content, decoded), "date" (the Date header as a POSIX time, or null), "defects"}.
--auth advertises AUTH PLAIN and LOGIN, also without TLS (auth_require_tls=False: a test
server), requires it before MAIL, and accepts only that user and password. SIGTERM stops it.
"""
import argparse
import asyncio
import email
import email.policy
import email.utils
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class Saver:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        auth = session.auth_data
        login = getattr(auth, "login", None)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            # STARTTLS, or SMTPS from the first byte
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "login": login.decode() if isinstance(login, bytes) else login,
        }
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        record["headers"] = {k: str(v) for k, v in msg.items()}
        record["body"] = msg.get_content()
        try:
            record["date"] = email.utils.parsedate_to_datetime(msg["Date"]).timestamp()
        except (TypeError, ValueError):
            record["date"] = None
        defects = [repr(d) for d in msg.defects]
        for k, v in msg.items():
            defects += ["%s: %r" % (k, d) for d in getattr(v, "defects", ())]
        record["defects"] = defects
        tmp = os.path.join(self.out, "%d.tmp" % self.count)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, "%d.json" % self.count))
        return "250 OK saved"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
    return authenticate


def context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--smtps", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", metavar="USER:PASSWORD")
    a = p.parse_args()
    handler = Saver(a.out)
    kwargs = {"hostname": "sink.test", "enable_SMTPUTF8": True}
    if a.starttls:
        kwargs["tls_context"] = context(*a.starttls)
    if a.auth:
        user, password = a.auth.split(":", 1)
        kwargs.update(authenticator=authenticator_for(user, password), auth_required=True,
                      auth_require_tls=False)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **kwargs), "127.0.0.1", 0,
                                      ssl=context(*a.smtps) if a.smtps else None)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("listening %d" % server.sockets[0].getsockname()[1], flush=True)
    await stop
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
