"""Email to a licensor's reviewers (docs/notifications.md), received by a real SMTP server on
127.0.0.1 (aiosmtpd, tests/smtp.py): settlements ready after a run, a revision of a disputed
settlement, the reminder three days before deemed acceptance. Transactional tests: messages are
sent after the commit, as in production."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from billing import settling
from billing.models import BillingRun, BillingRunPair, Settlement
from billing.notification_models import Notification
from billing.notifications import remind_reviewers, reminders_record
from billing.runs import billing_pairs_bill, billing_run_start
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
)
from tests.billing.test_run_failures import BIGINT_MAX, insert_like, per_token_catalog
from tests.smtp import Inbox, free_port, smtp_server, use_smtp

pytestmark = pytest.mark.django_db(transaction=True)

ANN, BOB, KIM, TOM = (
    "ann@minimax.example",
    "bob@minimax.example",
    "kim@kimi.example",
    "tom@tokenco.example",
)


def member(username: str, licensor: str, *, email: str = "", role: str = "direct") -> User:
    """A user of `licensor` in the admin: `direct` reviewer permissions, through a `group`,
    or `none` (a member who may not decide settlements)."""
    user = User.objects.create_user(username, email=email, is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=Licensor.objects.get(slug=licensor))
    if role == "direct":
        user.user_permissions.add(*licensor_reviewer_permissions())
    elif role == "group":
        group, _ = Group.objects.get_or_create(name="reviewers")
        group.permissions.add(*licensor_reviewer_permissions())
        user.groups.add(group)
    return user


def world(client_for: Callable[..., APIClient], *, review_days: int = 14) -> dict[str, Any]:
    """MiniMax (12% of commercial revenue, `review_days` to review) and Kimi (5%, no deemed
    acceptance) on Fireworks and Together; October's usage posted, not billed."""
    catalog = minimax_catalog(hosts=("fireworks", "together"))
    for agreement in catalog["agreements"]:
        agreement["review_days"] = review_days
    catalog_import(catalog)
    catalog_import(second_licensor_catalog())
    member("ann", "minimax", email=ANN)
    member("bob", "minimax", email=BOB, role="group")
    member("noemail", "minimax")
    member("viewer", "minimax", email="viewer@minimax.example", role="none")
    member("kim", "kimi", email=KIM)
    fireworks = client_for(host=Host.objects.get(slug="fireworks"))
    together = client_for(host=Host.objects.get(slug="together"))
    post_usage(
        fireworks,
        [record("c-1", revenue="75300.00"), record("k-1", revenue="100000.00", model="kimi-k2.5")],
    )
    post_usage(together, [record("t-1", revenue="12345.67")])
    return {"fireworks": fireworks, "together": together}


def settlement(licensor: str, host: str) -> Settlement:
    return Settlement.objects.exclude(status="superseded").get(
        licensor__slug=licensor, host__slug=host, period="2026-10"
    )


def link(s: Settlement) -> str:
    return f"http://127.0.0.1:8000/admin/billing/settlement/{s.pk}/change/"


def test_it_tells_each_licensors_reviewers_of_their_own_drafts_after_the_run(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: October's usage of two licensors on two hosts
    world(client_for)

    # when
    run_billing("2026-10")

    # then: one message per licensor, to its reviewers (directly or through a group) only
    assert len(smtp_inbox.messages) == 2
    [minimax] = smtp_inbox.to(ANN)
    [kimi] = smtp_inbox.to(KIM)
    assert sorted(minimax.rcpt_tos) == [ANN, BOB]
    assert kimi.rcpt_tos == [KIM]
    assert minimax.mail_from == "tollgate@localhost"
    assert minimax.subject == "[Tollgate] 2 settlements for 2026-10 await your review"
    assert kimi.subject == "[Tollgate] 1 settlement for 2026-10 awaits your review"

    # and: each lists its settlements with formatted totals, review dates and links
    fw, tg = settlement("minimax", "fireworks"), settlement("minimax", "together")
    assert fw.review_due_at is not None
    due = f"{fw.review_due_at:%Y-%m-%d %H:%M} UTC"
    assert "total:      USD 9,036.00" in minimax.body
    assert "total:      USD 1,481.48" in minimax.body
    assert minimax.body.count(f"review by:  {due}") == 2
    assert link(fw) in minimax.body and link(tg) in minimax.body
    assert "Fireworks, 2026-10" in minimax.body and "Together, 2026-10" in minimax.body
    kimi_fw = settlement("kimi", "fireworks")
    assert "total:      USD 5,000.00" in kimi.body
    assert "review by:  no deemed acceptance" in kimi.body
    assert link(kimi_fw) in kimi.body

    # and: no tenant leak, either way
    assert link(kimi_fw) not in minimax.body and "5,000.00" not in minimax.body
    assert link(fw) not in kimi.body and "9,036.00" not in kimi.body and "MiniMax" not in kimi.body


def test_a_pair_that_rolls_back_tells_nobody_of_it(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: MiniMax billed normally; TokenCo's pair cannot be settled (numeric overflow)
    world(client_for)
    catalog_import(per_token_catalog("10000000"))
    member("tom", "tokenco", email=TOM)
    post_usage(client_for(host=Host.objects.get(slug="fireworks")), [record("t", model="token-1")])
    insert_like("huge-1", like="t", category="commercial", input_tokens=BIGINT_MAX)
    insert_like("huge-2", like="t", category="commercial", input_tokens=BIGINT_MAX)

    # when
    with pytest.raises(CommandError, match=r"could not be settled \(tokenco/fireworks\)"):
        run_billing("2026-10")

    # then: the run is partial; TokenCo's reviewer hears nothing, the others of their drafts
    assert BillingRun.objects.get().status == "partial"
    assert smtp_inbox.to(TOM) == []
    assert len(smtp_inbox.to(ANN)) == len(smtp_inbox.to(KIM)) == 1
    assert not Notification.objects.filter(licensor__slug="tokenco").exists()


def test_a_revision_is_told_once_the_run_commits_and_never_by_a_run_that_rolled_back(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: Fireworks' MiniMax settlement disputed by its reviewer, and corrected usage
    clients = world(client_for)
    run_billing("2026-10")
    disputed = settlement("minimax", "fireworks")
    minimax_key = client_for(licensor=Licensor.objects.get(slug="minimax"))
    answer = minimax_key.post(
        f"/api/v1/settlements/{disputed.pk}/dispute", {"reason": "missing usage"}, format="json"
    )
    assert answer.status_code == 200, answer.content
    post_usage(clients["fireworks"], [record("c-2", revenue="1000.00")])
    smtp_inbox.messages.clear()

    # when: a re-run writes the revision, then fails before its commit (the disk is full)
    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(settling, "line_values", full)
    with pytest.raises(CommandError):
        run_billing("2026-10")

    # then: nothing was sent, nothing is left to send, the dispute stands
    assert smtp_inbox.messages == []
    assert not Notification.objects.filter(kind="revised").exists()
    disputed.refresh_from_db()
    assert disputed.status == "disputed"

    # when: the run comes round again and commits
    monkeypatch.undo()
    run_billing("2026-10")

    # then: the reviewers are told of the revision, with the old and new totals
    revision = settlement("minimax", "fireworks")
    assert revision.revision == 2
    [told] = [m for m in smtp_inbox.to(ANN) if "Revision" in m.subject]
    assert told.subject == ("[Tollgate] Revision 2 of Fireworks's 2026-10 settlement to review")
    assert "total:      USD 9,156.00 (was USD 9,036.00, change USD 120.00)" in told.body
    assert link(revision) in told.body and "(revision 1)" in told.body
    assert sorted(told.rcpt_tos) == [ANN, BOB]
    assert [m for m in smtp_inbox.to(KIM) if "Revision" in m.subject] == []


def test_the_reminder_is_sent_once_three_days_before_deemed_acceptance(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: MiniMax's drafts are deemed accepted in two days; Kimi's never are
    world(client_for, review_days=2)
    run_billing("2026-10")
    smtp_inbox.messages.clear()

    # when: the daily task runs twice
    assert remind_reviewers.delay().get() == 2
    assert remind_reviewers.delay().get() == 0

    # then: one reminder per MiniMax draft, to MiniMax's reviewers; none for Kimi
    fw = settlement("minimax", "fireworks")
    assert fw.review_due_at is not None
    on = f"{fw.review_due_at:%Y-%m-%d}"
    assert sorted(m.subject for m in smtp_inbox.messages) == [
        f"[Tollgate] Fireworks's 2026-10 settlement is deemed accepted on {on}",
        f"[Tollgate] Together's 2026-10 settlement is deemed accepted on {on}",
    ]
    assert all(sorted(m.rcpt_tos) == [ANN, BOB] for m in smtp_inbox.messages)
    [fireworks] = [m for m in smtp_inbox.messages if "Fireworks" in m.subject]
    assert "total:      USD 9,036.00" in fireworks.body
    assert link(fw) in fireworks.body
    assert smtp_inbox.to(KIM) == []
    # and the database holds it to once, whoever records it
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(
            kind="review_reminder",
            licensor=fw.licensor,
            settlement=fw,
            to=[ANN],
            subject="again",
            body="again",
            created_at=fw.computed_at,
        )


def test_no_reminder_before_the_three_days(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: drafts deemed accepted in 14 days
    world(client_for, review_days=14)
    run_billing("2026-10")
    smtp_inbox.messages.clear()
    fw = settlement("minimax", "fireworks")
    assert fw.review_due_at is not None

    # when: the task runs now, and on the day before the window
    assert remind_reviewers.delay().get() == 0
    assert reminders_record(now=fw.review_due_at - timedelta(days=3, seconds=1)) == []
    # and on the window's first second
    assert len(reminders_record(now=fw.review_due_at - timedelta(days=3))) == 2

    # then
    assert len(smtp_inbox.to(ANN)) == 2


def test_a_mail_server_that_is_down_loses_nothing(
    settings: Any, client_for: Callable[..., APIClient]
) -> None:
    # given: the mail server is down when the run ends
    use_smtp(settings, f"smtp://127.0.0.1:{free_port()}")
    world(client_for)

    # when: the run commits
    run_billing("2026-10")

    # then: the settlements stand; the notifications wait, with why
    assert Settlement.objects.count() == 3
    pending = Notification.objects.filter(sent_at__isnull=True)
    assert pending.count() == 2
    assert all("Connection refused" in n.last_error for n in pending)

    # when: the server is back and the sweep runs, twice
    for inbox in smtp_server():
        use_smtp(settings, inbox.url)
        first, second = io.StringIO(), io.StringIO()
        call_command("send_notifications", stdout=first)
        call_command("send_notifications", stdout=second)

        # then: each message arrived once
        assert first.getvalue() == "notifications: 2 sent, 0 failed\n"
        assert second.getvalue() == "notifications: 0 sent, 0 failed\n"
        assert len(inbox.to(ANN)) == len(inbox.to(KIM)) == 1
    assert not Notification.objects.filter(sent_at__isnull=True).exists()


def test_operators_see_the_log_and_send_an_unsent_one_from_the_admin(
    smtp_inbox: Inbox, settings: Any, client_for: Callable[..., APIClient]
) -> None:
    # given: the run's messages could not be sent (the mail server was down)
    world(client_for)
    use_smtp(settings, f"smtp://127.0.0.1:{free_port()}")
    run_billing("2026-10")
    unsent = Notification.objects.get(licensor__slug="minimax")
    assert unsent.sent_at is None and unsent.attempts == 1
    use_smtp(settings, smtp_inbox.url)  # the server is back

    # when: an operator sends it from the log
    operator = Client()
    operator.force_login(User.objects.create_superuser("op", "op@tollgate.example", "pw"))
    log = operator.get("/admin/billing/notification/")
    answer = operator.post(
        "/admin/billing/notification/",
        {"action": "send_now", ACTION_CHECKBOX_NAME: [unsent.pk]},
        follow=True,
    )

    # then: the log listed it; it is sent once, to MiniMax's reviewers only
    assert log.status_code == 200 and unsent.subject in log.content.decode()
    assert "1 sent, 0 failed." in answer.content.decode()
    assert [sorted(m.rcpt_tos) for m in smtp_inbox.messages] == [[ANN, BOB]]
    unsent.refresh_from_db()
    assert unsent.sent_at is not None and unsent.attempts == 2
    # and: a reviewer has no access to the log, not even to their own licensor's messages
    reviewer = Client()
    reviewer.force_login(User.objects.get(username="ann"))
    assert reviewer.get("/admin/billing/notification/").status_code == 403
    assert reviewer.get(f"/admin/billing/notification/{unsent.pk}/change/").status_code == 403


def test_two_reminder_runs_at_once_record_one_reminder(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: two drafts due in two days; another run of the task has inserted Fireworks'
    # reminder and not committed yet
    world(client_for, review_days=2)
    run_billing("2026-10")
    smtp_inbox.messages.clear()
    fw, tg = settlement("minimax", "fireworks"), settlement("minimax", "together")
    inserted, commit = threading.Event(), threading.Event()

    def other_run() -> None:
        try:
            with transaction.atomic():
                Notification.objects.create(
                    kind="review_reminder",
                    licensor=fw.licensor,
                    settlement=fw,
                    to=[ANN],
                    subject="reminder",
                    body="reminder",
                    created_at=fw.computed_at,
                )
                inserted.set()
                commit.wait(timeout=60)
        finally:
            connection.close()

    recorded: list[Notification] = []

    def this_run() -> None:
        try:
            recorded.extend(reminders_record())
        finally:
            connection.close()

    first = threading.Thread(target=other_run)
    first.start()
    assert inserted.wait(timeout=60)

    # when: this run reaches Fireworks' reminder while the other holds it, then the other commits
    second = threading.Thread(target=this_run)
    second.start()
    with connection.cursor() as cursor:
        waiting = False
        for _ in range(600):  # until this run waits on the other's insert (at most a minute)
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                waiting = True
                break
            time.sleep(0.1)
    commit.set()
    first.join(timeout=60)
    second.join(timeout=60)

    # then: it waited, found the reminder taken, and recorded only Together's
    assert waiting
    assert [n.settlement_id for n in recorded] == [tg.pk]
    assert Notification.objects.filter(kind="review_reminder", settlement=fw).count() == 1
    assert [m.subject for m in smtp_inbox.messages] == [recorded[0].subject]


def test_a_re_run_tells_only_the_licensors_whose_drafts_it_changed(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: October billed once (one message to MiniMax's reviewers, one to Kimi's)
    clients = world(client_for)
    run_billing("2026-10")
    assert len(smtp_inbox.messages) == 2

    # when: October run again with the same usage
    run_billing("2026-10")

    # then: nobody is told again
    assert len(smtp_inbox.messages) == 2

    # when: one more MiniMax record of Together's, and October run a third time
    post_usage(clients["together"], [record("t-2", revenue="100.00")])
    run_billing("2026-10")

    # then: MiniMax's reviewers hear of their drafts again (both, the unchanged one too); Kimi's
    # reviewer, whose draft did not change, does not
    assert len(smtp_inbox.messages) == 3
    assert len(smtp_inbox.to(KIM)) == 1
    third = smtp_inbox.to(ANN)[-1]
    assert third.subject == "[Tollgate] 2 settlements for 2026-10 await your review"
    assert "total:      USD 1,493.48" in third.body
    assert "total:      USD 9,036.00" in third.body


def test_drafts_of_a_run_that_never_ended_are_told_by_the_run_that_does(
    smtp_inbox: Inbox, client_for: Callable[..., APIClient]
) -> None:
    # given: a run of October that wrote every draft but one pair's, then stopped (never ended,
    # so it told nobody)
    world(client_for)
    first = billing_run_start(period="2026-10", trigger="command")
    pairs = list(
        BillingRunPair.objects.filter(run=first)
        .order_by("licensor__slug", "host__slug")
        .values_list("host_id", "licensor_id")
    )
    assert len(pairs) == 3
    billing_pairs_bill(run_id=first.pk, pairs=pairs[:2])  # Kimi's and one of MiniMax's
    assert smtp_inbox.messages == []

    # when: October run again (it supersedes the first run and finds the same usage)
    run_billing("2026-10")

    # then: both licensors' reviewers hear of their drafts, those the first run wrote included
    assert len(smtp_inbox.messages) == 2
    [minimax] = smtp_inbox.to(ANN)
    [kimi] = smtp_inbox.to(KIM)
    assert minimax.subject == "[Tollgate] 2 settlements for 2026-10 await your review"
    assert kimi.subject == "[Tollgate] 1 settlement for 2026-10 awaits your review"
