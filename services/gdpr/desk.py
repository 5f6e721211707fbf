"""The GDPR desk: requests in, their work done across every data-owning service, proof kept.

Work on a verified request happens in steps, each an atomic update of the request with its
audit entries (and the events it owes). A step that needs a service which does not answer
leaves the request in progress and tries again later (`next_attempt_at`), so a service being
down delays the answer but never loses or falsifies it.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Protocol

from pymongo.errors import DuplicateKeyError

from services.gdpr import requests as rq
from services.gdpr.repository import GdprStorage
from shared.customers import CustomerCheck, valid_customer_id
from shared.errors import Conflict, NotFound, ValidationError
from shared.events import Event, build_event
from shared.events.notifications import CONSENT_PURPOSES, CONSENT_SOURCES
from shared.times import iso_everywhere, utcnow

DocumentRef = tuple[str, Any]

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("e1d2c3b4-a596-4788-9f0a-1b2c3d4e5f60")
SYSTEM = "gdpr-service"


class Unavailable(Exception):
    """A service did not answer in time (down, or busy)."""


class Services(Protocol):
    """How the desk asks other services (nameko RPC in the service; fakes in unit tests)."""

    def call(self, service: str, method: str, *args: Any) -> Any: ...

    def call_all(self, services: Iterable[str], method: str, *args: Any
                 ) -> dict[str, tuple[str, Any]]:
        """Each service's ("ok", answer), ("not_found", message) or ("unavailable", why)."""
        ...


@dataclass(frozen=True)
class DeskSettings:
    services: tuple[str, ...] = ("customer_sync", "segmentation", "loyalty", "notifications")
    retry_seconds: float = 60.0
    confirmation_minutes: float = 60.0  # an erasure confirmation later than this is overdue
    lease_seconds: float = 120.0


def request_view(doc: dict, now: datetime) -> dict:
    view = {k: iso_everywhere(v) for k, v in doc.items() if k not in ("_id", "outbox", "lease_until",
                                                           "search_terms")}
    view["overdue"] = rq.overdue(doc, now)
    view["needs_review"] = rq.needs_review(doc)
    return view


def _no_relay(refs: Iterable[DocumentRef]) -> None:
    """Where no relay runs (unit tests of the rules): owed events wait in the outbox."""


class Desk:
    """`notify` is told of every document that now owes events, right after the write: a
    consent change must reach notifications before its next send decision, not at the next
    outbox sweep."""

    def __init__(self, storage: GdprStorage, settings: DeskSettings = DeskSettings(),
                 clock: Callable[[], datetime] = utcnow,
                 notify: Callable[[Iterable[DocumentRef]], None] = _no_relay,
                 customers: CustomerCheck | None = None) -> None:
        self.storage = storage
        self.settings = settings
        self.clock = clock
        self.notify = notify
        self.customers = customers

    # -- people ----------------------------------------------------------------------------------
    def submit(self, store_id: str, request_type: str, email: str, details: dict | None,
               actor: str) -> dict:
        request = rq.new_request(store_id, request_type, email, details, actor, self.clock())
        self.storage.requests.insert(request)
        return request_view(request, self.clock())

    def verify_identity(self, request_id: str, actor: str, note: str = "") -> dict:
        """An operator confirms who asked; the work starts at once."""
        request = self._get(request_id)
        rq.transition(request, "verified")
        now = self.clock()
        done = self.storage.requests.step(request_id, "received", {
            "state": "in_progress", "verified_at": now, "next_attempt_at": now,
            "lease_until": None}, [
            rq.audit_entry(now, actor, "identity_verified", note or "identity confirmed"),
            rq.audit_entry(now, SYSTEM, "in_progress", "work started")])
        if done is None:
            raise Conflict(f"request {request_id} changed meanwhile; look again")
        return request_view(done, now)

    def reject(self, request_id: str, reason: str, actor: str) -> dict:
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("reason is required", {"fields": {"reason": ["required"]}})
        request = self._get(request_id)
        rq.transition(request, "rejected")
        now = self.clock()
        done = self.storage.requests.step(request_id, request["state"], {
            "state": "rejected", "completed_at": now, "rejection_reason": reason},
            [rq.audit_entry(now, actor, "rejected", reason)])
        if done is None:
            raise Conflict(f"request {request_id} changed meanwhile; look again")
        return request_view(done, now)

    def get(self, request_id: str) -> dict:
        return request_view(self._get(request_id), self.clock())

    def list(self, store_id: str, state: str | None = None, limit: int = 100) -> list[dict]:
        """Open requests first, overdue ones before the rest, then by due date."""
        if state is not None and state not in rq.STATES:
            raise ValidationError(f"state must be one of {', '.join(rq.STATES)}",
                                  {"fields": {"state": ["invalid"]}})
        query: dict = {"store_id": store_id}
        if state:
            query["state"] = state
        now = self.clock()
        docs = list(self.storage.requests.collection.find(query, {"outbox": 0}))
        docs.sort(key=lambda d: (not rq.overdue(d, now), d["state"] not in rq.OPEN_STATES,
                                 d["due_at"]))
        return [request_view(d, now) for d in docs[:limit]]

    def download_export(self, request_id: str) -> dict:
        request = self._get(request_id)
        if request["type"] not in ("access", "portability"):
            raise ValidationError("only access and portability requests have an export",
                                  {"fields": {"request_id": ["no export"]}})
        export = self.storage.exports.find_one({"_id": request_id}, {"_id": 0})
        if export is None:
            # The request exists; its export does not yet: a conflict with its state, not a 404.
            raise Conflict(f"the export of {request_id} is not ready (request is {request['state']})")
        return iso_everywhere(export)

    def _get(self, request_id: str) -> dict:
        request = self.storage.requests.get(request_id)
        if request is None:
            raise NotFound(f"no request {request_id}")
        return request

    # -- consent ------------------------------------------------------------------------------------
    def set_consent(self, store_id: str, customer_id: str, purpose: str, granted: bool,
                    source: str, actor: str, note: str = "") -> dict:
        if purpose not in CONSENT_PURPOSES:
            raise ValidationError(f"purpose must be one of {', '.join(CONSENT_PURPOSES)}",
                                  {"fields": {"purpose": ["invalid"]}})
        if source not in CONSENT_SOURCES:
            raise ValidationError(f"source must be one of {', '.join(CONSENT_SOURCES)}",
                                  {"fields": {"source": ["invalid"]}})
        if not isinstance(granted, bool):
            raise ValidationError("granted must be true or false", {"fields": {"granted": ["invalid"]}})
        customer_id = self._existing_customer(store_id, customer_id)
        self._record_consent(store_id, customer_id, purpose, granted, source, actor, note,
                             self.clock(), publish=True, causation=None)
        return self.get_consent(store_id, customer_id)

    def _existing_customer(self, store_id: str, customer_id: object) -> str:
        """A consent record held here was made for a real customer; customer_sync answers for
        anyone else (a customer created a moment ago included)."""
        if self.customers is None:
            return valid_customer_id(customer_id)
        return self.customers.require(
            store_id, customer_id,
            lambda candidate: self.storage.consents.get(store_id, candidate) is not None)

    def record_consent_event(self, event: Event) -> None:
        """consent.changed from elsewhere (notifications: an SMS STOP, an unsubscribe link,
        the preference page, an email opt-in held for or given its confirmation): recorded,
        not re-sent."""
        data = event.data
        if data.get("origin") == "gdpr":
            return
        self._record_consent(event.store_id, data["customer_id"], data["purpose"], data["granted"],
                             data["source"], data["origin"], data.get("note", ""),
                             data["changed_at"], publish=False, causation=event.event_id,
                             pending=bool(data.get("pending")))

    def record_capture(self, event: Event) -> None:
        """consent.captured from customer_sync (a checkout opt-in, an import row with proof):
        recorded once per capture key and purpose, at the time it was given, so a redelivery
        or a second backfill adds nothing and an older capture never overrides a newer
        change; published as consent.changed when it is the newest."""
        data = event.data
        self._record_consent(event.store_id, data["customer_id"], data["purpose"], True,
                             data["source"], f"customer_sync:{data['source']}",
                             data.get("evidence") or "", data["captured_at"],
                             publish=True, causation=f"{data['capture_key']}:{data['purpose']}",
                             order_id=data.get("order_id"))

    def record_operator_change(self, store_id: str, customer_id: str, purpose: str,
                               granted: bool, actor: str, reason: str, at: datetime) -> bool:
        """An operator's change of a customer already checked to exist (bulk changes):
        recorded and published; answers whether the current state changed."""
        return self._record_consent(store_id, customer_id, purpose, granted, "operator", actor,
                                    reason, at, publish=True, causation=None)

    def _record_consent(self, store_id: str, customer_id: str, purpose: str, granted: bool,
                        source: str, actor: str, note: str, at: datetime, publish: bool,
                        causation: str | None, pending: bool = False,
                        order_id: str | None = None) -> bool:
        """Answers whether the purpose's current state changed. `pending`: given but waiting
        for the customer's confirmation (email double opt-in, which notifications runs): not
        granted meanwhile, and shown as pending."""
        change_id = causation or uuid.uuid4().hex
        entry = {"change_id": change_id, "purpose": purpose, "granted": granted, "at": at,
                 "source": source, "actor": actor, "note": note, "pending": pending}
        data = {"customer_id": customer_id, "purpose": purpose, "granted": granted,
                "source": source, "changed_at": at.isoformat(), "origin": "gdpr", "note": note}
        if order_id is not None:
            entry["order_id"] = data["order_id"] = order_id
        events = []
        if publish:
            events.append(build_event(
                "consent.changed", store_id=store_id,
                event_id=str(uuid.uuid5(_NAMESPACE, f"consent:{store_id}:{customer_id}:{change_id}")),
                data=data))
        changed = self.storage.consents.record(store_id, customer_id, purpose, entry, events)
        if events and changed:
            self.notify([(self.storage.consents.collection.name,
                          self.storage.consents.key(store_id, customer_id))])
        return changed

    def get_consent(self, store_id: str, customer_id: str) -> dict:
        """A customer with no consent recorded has an empty record; anyone who is not a
        customer of the store is NotFound, never an empty record that says they are."""
        customer_id = valid_customer_id(customer_id)
        doc = self.storage.consents.get(store_id, customer_id)
        if doc is None:
            customer_id = self._existing_customer(store_id, customer_id)
            return {"store_id": store_id, "customer_id": customer_id, "purposes": {}, "history": []}
        return {"store_id": store_id, "customer_id": customer_id,
                "purposes": iso_everywhere(doc.get("purposes") or {}),
                "history": iso_everywhere(sorted(doc.get("history") or [], key=lambda e: e["at"]))}

    # -- erasure confirmations in ------------------------------------------------------------------
    def record_confirmation(self, event: Event) -> None:
        data = event.data
        request = self.storage.requests.get(data["request_id"])
        if request is None or request["type"] != "erasure":
            log.warning("an erasure confirmation for no known erasure request: %s", data["request_id"])
            return
        service = data["service"]
        if service in ((request.get("erasure") or {}).get("confirmations") or {}):
            return  # already recorded
        now = self.clock()
        fields = {f"erasure.confirmations.{service}": {
            "counts": data["counts"], "customer_ids": list(data.get("customer_ids") or []),
            "at": now}}
        requests = self.storage.requests.collection
        requests.update_one(
            {"_id": request["_id"], f"erasure.confirmations.{service}": {"$exists": False}},
            {"$set": fields, "$push": {"audit": rq.audit_entry(
                now, service, "erasure_confirmed", f"{service} erased its data", counts=data["counts"])}})
        self._verify_now_if_all_confirmed(request["_id"], now)

    def _verify_now_if_all_confirmed(self, request_id: str, now: datetime) -> None:
        """All in: verify without waiting. Asked after each write that may be the last one
        (a confirmation, or the processor moving the next attempt), of the stored request: of
        two writers at once, the later one's check sees both writes (what either read before
        writing did not)."""
        self.storage.requests.collection.update_one(
            {"_id": request_id, "state": "in_progress", "next_attempt_at": {"$gt": now},
             **{f"erasure.confirmations.{name}": {"$exists": True}
                for name in self.settings.services}},
            {"$set": {"next_attempt_at": now}})

    # -- the shop's own eraser -----------------------------------------------------------------------
    def import_shop_erasures(self, services: Services) -> int:
        """Erasures done with WordPress's eraser reach customer_sync first (a blanked customer,
        anonymised orders); each becomes an erasure request here, so every other service
        forgets the person too. Answers how many were new."""
        stores = services.call_all(["customer_sync"], "list_stores")["customer_sync"]
        if stores[0] != "ok":
            return 0
        created = 0
        for store in stores[1]:
            store_id = store["store_id"]
            mark = self.storage.database["shop_erasure_marks"].find_one({"_id": store_id}) or {}
            since = mark.get("since")
            outcome = services.call_all(["customer_sync"], "shop_erasures", store_id,
                                        iso_everywhere(since) if since else None)["customer_sync"]
            if outcome[0] != "ok":
                continue
            latest = since
            for erased in outcome[1]["erasures"]:
                erased_at = datetime.fromisoformat(erased["shop_erased_at"])
                latest = max(latest, erased_at) if latest else erased_at
                if erased.get("merged_into"):
                    continue  # the registered customer's request covers a merged guest
                request = rq.shop_erasure(store_id, erased["customer_id"], erased_at, self.clock())
                try:
                    self.storage.requests.insert(request)
                    created += 1
                except DuplicateKeyError:
                    pass  # imported before: the request id is the customer's
            if latest:
                self.storage.database["shop_erasure_marks"].replace_one(
                    {"_id": store_id}, {"since": latest}, upsert=True)
        return created

    # -- the work ----------------------------------------------------------------------------------
    def process_due(self, services: Services, limit: int = 20) -> int:
        done = 0
        for _ in range(limit):
            now = self.clock()
            request = self.storage.requests.claim_due(
                now, now + timedelta(seconds=self.settings.lease_seconds))
            if request is None:
                break
            try:
                self.process(request, services)
            except Exception as exc:
                log.exception("a request step failed; it is retried", extra={
                    "store_id": request["store_id"]})
                self._later(request, f"step failed: {exc}")
            done += 1
        return done

    def process(self, request: dict, services: Services) -> None:
        if not request.get("customer_ids") and not request.get("resolved"):
            if not self._resolve(request, services):
                return
            request = self.storage.requests.get(request["_id"])
        kind = request["type"]
        if kind in ("access", "portability"):
            self._export(request, services)
        elif kind == "rectification":
            self._rectify(request, services)
        elif kind == "objection":
            self._object(request)
        else:
            self._erase(request, services)

    def _resolve(self, request: dict, services: Services) -> bool:
        """Who the email belongs to in the shop (customer_sync knows)."""
        now = self.clock()
        outcome = services.call_all(["customer_sync"], "find_customer", request["store_id"],
                                    request["email"])["customer_sync"]
        if outcome[0] == "unavailable":
            self._later(request, f"customer_sync did not answer: {outcome[1]}")
            return False
        if outcome[0] == "not_found":
            fields = {"resolved": True, "customer_ids": []}
            audit = [rq.audit_entry(now, SYSTEM, "resolved", "no customer with this email in the shop")]
        else:
            customer = outcome[1]
            terms = [t for t in {request["email"], customer.get("email"), customer.get("phone"),
                                 " ".join(p for p in (customer.get("first_name"),
                                                      customer.get("last_name")) if p)} if t]
            fields = {"resolved": True, "customer_ids": [customer["customer_id"]],
                      "search_terms": sorted(terms)}
            audit = [rq.audit_entry(now, SYSTEM, "resolved",
                                    f"customer {customer['customer_id']}")]
        self.storage.requests.step(request["_id"], "in_progress", fields, audit)
        return True

    def _complete(self, request: dict, result: dict, detail: str) -> None:
        now = self.clock()
        self.storage.requests.step(request["_id"], "in_progress", {
            "state": "completed", "completed_at": now, "result": result, "lease_until": None,
            "search_terms": None}, [rq.audit_entry(now, SYSTEM, "completed", detail)])

    def _later(self, request: dict, why: str, **extra: Any) -> None:
        now = self.clock()
        self.storage.requests.step(request["_id"], "in_progress", {
            "next_attempt_at": now + timedelta(seconds=self.settings.retry_seconds),
            "lease_until": None, "waiting_for": why, **extra},
            [rq.audit_entry(now, SYSTEM, "waiting", why)])

    def _export(self, request: dict, services: Services) -> None:
        answers = dict(request.get("answers") or {})
        missing = [s for s in self.settings.services if s not in answers]
        if request["customer_ids"] and missing:
            customer_id = request["customer_ids"][0]
            outcomes = services.call_all(missing, "export_customer", request["store_id"], customer_id)
            now = self.clock()
            for service, (status, answer) in outcomes.items():
                if status == "ok":
                    answers[service] = {"answered_at": now, "status": "data", "data": answer}
                elif status == "not_found":
                    answers[service] = {"answered_at": now, "status": "nothing held", "data": None}
            self.storage.requests.step(request["_id"], "in_progress",
                                       {"answers": answers}, [])
            missing = [s for s in self.settings.services if s not in answers]
            if missing:
                self._later(request, f"waiting for {', '.join(missing)}")
                return
        now = self.clock()
        consent = [self.get_consent(request["store_id"], c) for c in request["customer_ids"]]
        document = {
            "request_id": request["request_id"], "type": request["type"],
            "store_id": request["store_id"], "generated_at": now,
            "subject": {"email": request["email"], "customer_ids": request["customer_ids"]},
            "manifest": [{"service": s, "answered_at": a["answered_at"], "status": a["status"]}
                         for s, a in sorted(answers.items())]
                        + [{"service": "gdpr", "answered_at": now, "status": "data"}],
            "data": {**{s: a["data"] for s, a in sorted(answers.items())},
                     "gdpr": {"consent": consent}},
        }
        self.storage.exports.replace_one({"_id": request["_id"]}, {**document, "_id": request["_id"]},
                                         upsert=True)
        self._complete(request, {"export": "ready", "services": sorted(answers)},
                       "export assembled from every service")

    def _rectify(self, request: dict, services: Services) -> None:
        if not request["customer_ids"]:
            self._complete(request, {"rectified": False}, "no customer with this email to rectify")
            return
        fields = request["details"]["fields"]
        status, answer = services.call_all(["customer_sync"], "rectify_customer", request["store_id"],
                                           request["customer_ids"][0], fields,
                                           SYSTEM)["customer_sync"]
        if status == "unavailable":
            self._later(request, f"customer_sync did not answer: {answer}")
            return
        if status == "not_found":
            self._complete(request, {"rectified": False}, f"customer_sync: {answer}")
            return
        self._complete(request, {"rectified": True, "answer": answer},
                       f"contact fields corrected: {', '.join(sorted(fields))}")

    def _object(self, request: dict) -> None:
        now = self.clock()
        for customer_id in request["customer_ids"]:
            for purpose in ("email_marketing", "sms_marketing"):
                self._record_consent(request["store_id"], customer_id, purpose, False, "request",
                                     SYSTEM, f"objection {request['request_id']}", now,
                                     publish=True, causation=f"{request['request_id']}:{purpose}")
        self._complete(request, {"marketing_consent": "off", "customer_ids": request["customer_ids"]},
                       "marketing consent turned off on every channel")

    def _erase(self, request: dict, services: Services) -> None:
        now = self.clock()
        erasure = request.get("erasure") or {}
        confirmations = erasure.get("confirmations") or {}
        expected = set(self.settings.services)
        if not request["customer_ids"]:
            self._complete(request, {"erased": False}, "no customer with this email: nothing to erase")
            return
        erased_ids = sorted(set(request["customer_ids"]).union(
            *(c.get("customer_ids") or [] for c in confirmations.values())))
        # gdpr's own part: its merge receipts kept the consent states a merge changed. Again at
        # each step, for the records a service's confirmation adds (a merged duplicate).
        self.storage.merges.forget(request["store_id"], erased_ids)
        if not erasure.get("requested_at") or (
                set(confirmations) < expected and erasure.get("ask_again_at") <= now):
            asked = int(erasure.get("asked", 0)) + 1
            event = build_event("gdpr.erasure_requested", store_id=request["store_id"],
                                event_id=str(uuid.uuid5(_NAMESPACE, f"{request['_id']}:ask:{asked}")),
                                correlation_id=request["request_id"],
                                data={"request_id": request["request_id"],
                                      "customer_ids": request["customer_ids"],
                                      "email": request["email"]})
            pending = sorted(expected - set(confirmations))
            ask_again = now + timedelta(minutes=self.settings.confirmation_minutes)
            detail = ("erasure asked of every service" if asked == 1 else
                      f"confirmation overdue from {', '.join(pending)}: asked again")
            self.storage.requests.step(request["_id"], "in_progress", {
                "erasure.requested_at": erasure.get("requested_at") or now,
                "erasure.asked": asked, "erasure.ask_again_at": ask_again,
                "erasure.overdue_services": pending if asked > 1 else [],
                "next_attempt_at": ask_again, "lease_until": None},
                [rq.audit_entry(now, SYSTEM, "erasure_requested", detail)], [event])
            self.notify([(self.storage.requests.collection.name, request["_id"])])
            self._verify_now_if_all_confirmed(request["_id"], now)  # late answers to a re-ask
            return
        if set(confirmations) < expected:
            self.storage.requests.step(request["_id"], "in_progress", {
                "next_attempt_at": erasure["ask_again_at"], "lease_until": None}, [])
            # the last confirmation may have landed since this request was read
            self._verify_now_if_all_confirmed(request["_id"], now)
            return
        # Every service confirmed: prove it, by asking each to search for the person.
        terms = request.get("search_terms") or ([request["email"]] if request.get("email") else [])
        if not terms:  # the shop erased first: nothing left here to search with
            self._complete(request, {"erased": True, "verification": "not possible: the shop "
                                     "had already erased the email and names",
                                     "confirmations": {s: c["counts"]
                                                       for s, c in confirmations.items()}},
                           "every service confirmed the erasure the shop started")
            return
        # The email is the person's alone: searched for everywhere. A phone or a name may be
        # another customer's too (a household, an office, a common name): it counts only where
        # a service ties it to the erased ids.
        anywhere = [t for t in terms if rq.is_email(t)]
        tied = [t for t in terms if not rq.is_email(t)]
        outcomes = services.call_all(sorted(expected), "search_personal_data",
                                     request["store_id"], anywhere, tied, erased_ids)
        unanswered = sorted(s for s, (status, _) in outcomes.items() if status != "ok")
        found = {s: answer["matches"] for s, (status, answer) in outcomes.items()
                 if status == "ok" and answer.get("matches")}
        ambiguous = {s: answer["ambiguous"] for s, (status, answer) in outcomes.items()
                     if status == "ok" and answer.get("ambiguous")}
        if unanswered:
            self._later(request, f"verification waiting for {', '.join(unanswered)}")
            return
        if found:
            # A service may still be finishing (an outbox, a late message): look again later;
            # the request stays open, and says where, until nothing is found.
            self._later(request, "verification found personal data in "
                        f"{', '.join(sorted(found))}; checking again", verification=found)
            return
        counts = {s: c["counts"] for s, c in confirmations.items()}
        if ambiguous:
            # Nothing tied to the person is left, but their phone or name is in records that
            # name no customer: an operator must judge those; looking again would not decide.
            where = ", ".join(f"{s} ({', '.join(m['collection'] for m in found_in)})"
                              for s, found_in in sorted(ambiguous.items()))
            self._complete(request, {"erased": True, "verification": "ambiguous",
                                     "ambiguous": ambiguous, "confirmations": counts},
                           "needs review: every service confirmed and nothing tied to the "
                           "person is left, but records naming no customer hold their phone or "
                           f"name: {where}")
            return
        self._complete(request, {"erased": True, "verification": "nothing found",
                                 "confirmations": counts},
                       "every service confirmed, and a search found nothing of the person")
