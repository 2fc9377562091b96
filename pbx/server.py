"""The composition root: builds every part of the PBX from the config and runs it.

Resources are opened in order and closed in reverse; SIGTERM/SIGINT stop the PBX cleanly (calls
in progress get a BYE, queued records reach the database), SIGHUP reloads the config (a bad new
config is refused and the running one stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from crmsync.contacts import create_lead, normalise
from crmsync.fit import fit
from crmsync.governance import Governance
from crmsync.imports import CallImports
from crmsync.lookup import CallerLookup, Match
from crmsync.queries import CrmQueries
from crmsync.recovery import cut_off, load_calls
from crmsync.scheduled import ReminderLoop, ScheduledCalls
from crmsync.users import sync_users
from crmsync.webhooks import WebhookWorker
from crmsync.writer import CallRecordFolder
from media.relay import PortAllocator
from media.udp import RtpRelay
from sip.registrar import Registrar
from sip.transaction import TimerSettings, TransactionLayer
from sip.transport import ListenSpec, SipTransport

from . import schema
from .api import create_app
from .api_scheduled import SchedulingControl
from .api_users import UserInfo
from .auth import Authenticator
from .bindings import BindingWriter, load_bindings
from .clicktocall import ClickToCall
from .config import Config, ConfigError, User, merge_reload
from .crmcontrol import CrmControl
from .db import WriteBehind, open_engine
from .events import EventHub
from .governance import RecordingGovernance
from .httpserver import HttpServer
from .journal import JournalLocked, RecordJournal, Replay, read_journal
from .presence import Presence
from .prompts import Prompts, load_resolved, resolve
from .queuecontrol import QueueControlImpl
from .queues import Queues
from .queuewait import agent_services
from .recording import Recordings
from .records import CallEvent, CallStarted
from .registration import RegistrationService
from .sipapp import SipApp
from .trunkreg import TrunkRegistrations

logger = logging.getLogger("pbx")


class DbRecordSink:
    """Folds call-record events in memory; :meth:`flush` hands what changed to the writer.

    ``emit`` never blocks the call path; the server calls ``flush`` every 200 ms.
    """

    def __init__(self, db: WriteBehind, webhooks: WebhookWorker,
                 journal: RecordJournal | None = None, region: str = "US") -> None:
        self._db = db
        self._wake = webhooks.wake
        self._region = region
        self._config: Config | None = None
        self._folder = self._new_folder()
        self.journal = journal

    def _new_folder(self) -> CallRecordFolder:
        # Wakes the worker once a batch with outbox rows is committed (from the writer thread).
        folder = CallRecordFolder(on_outbox_commit=self._wake, region=self._region)
        if self._config is not None:
            folder.set_webhooks(self._config.crm.webhooks)
            folder.lookup_order = self._config.crm.lookup_order
        return folder

    def set_webhooks(self, config: Config) -> None:
        """Which webhooks get the events of calls from now on, and which kinds of CRM record
        calls are linked to (start and reload)."""
        self._config = config
        self._folder.set_webhooks(config.crm.webhooks)
        self._folder.lookup_order = config.crm.lookup_order

    hub: EventHub | None = None
    governance: RecordingGovernance | None = None

    def emit(self, event: CallEvent) -> None:
        event = fit(event)  # a too-long name from the network must not sink a whole batch
        if self.journal is not None:
            self.journal.append(event)  # first: a kill after this loses nothing
        self._folder.add(event)
        if self.hub is not None:
            self.hub.on_record(event)
        if self.governance is not None:
            self.governance.on_record(event)

    def flush(self) -> None:
        journal = self.journal
        seq = journal.rotate(self._folder.in_progress()) if journal is not None else None
        job = self._folder.flush()
        if seq is None:
            if job is not None:
                self._db.submit(job)
            return
        assert journal is not None
        if job is None:
            journal.committed(seq)  # its events changed no row
            return

        def journaled(session: Session) -> None:
            job(session)
            # The segment's events are in this transaction: once it commits they need no
            # replay (a batch that fails keeps the segment for the next start).
            sa_event.listen(session, "after_commit", lambda _s: journal.committed(seq),
                            once=True)

        self._db.submit(journaled)

    async def recover(self, engine: Engine, recordings: Recordings) -> int:
        """Replay what a killed PBX left in the journal, end the calls it cut off (with their
        recordings), commit, then start a new journal. Returns the calls ended."""
        journal = self.journal
        assert journal is not None
        replay = await asyncio.to_thread(read_journal, journal.directory)
        ended = 0
        if replay.segments:
            try:
                ended, committed = await asyncio.to_thread(self._replay, replay, engine,
                                                           recordings)
                flushed = await asyncio.to_thread(self._db.flush, 60.0)
            except Exception:
                # Whatever the journal holds must not stop the PBX from starting.
                logger.exception("replaying the call-record journal failed")
                committed, flushed = threading.Event(), True
            if not flushed and not committed.is_set():
                logger.warning("the database is slow to take the %d call-record events "
                               "replayed from the journal; going on meanwhile",
                               len(replay.events))
            elif committed.is_set():
                logger.warning(
                    "the PBX had stopped without writing everything: %d call-record events "
                    "replayed from %d journal segments (%d damaged frames), %d cut-off calls "
                    "ended", len(replay.events), len(replay.segments), replay.damaged, ended)
            else:
                # Replaying them again would fail again, at every start: set them aside.
                kept = await asyncio.to_thread(journal.set_aside, replay.segments)
                logger.error("the call-record journal's %d events could not be replayed into "
                             "the database (see the error above); kept in %s",
                             len(replay.events), kept)
        journal.open(())
        return ended

    def _replay(self, replay: Replay, engine: Engine,
                recordings: Recordings) -> tuple[int, threading.Event]:
        """(A thread.) Fold the journal's events over the committed rows, end the open calls
        and hand the result to the writer; the segments go once it is committed."""
        ids = set(replay.open_calls)
        ids.update(event.call_id for event in replay.events)
        rows = load_calls(engine, ids)
        folder = self._new_folder()  # its own: a failure here leaves the live one clean
        folder.adopt(row for row in rows.values() if row["ended_at"] is None)
        for event in replay.events:
            if isinstance(event, CallStarted) and event.call_id in rows:
                continue  # committed already; later events apply to that row
            folder.add(event)
        default = replay.last_written or time.time()
        ended = 0
        for call_id in folder.in_progress():
            row = folder.row(call_id)
            assert row is not None
            at = datetime.fromtimestamp(replay.last_seen.get(call_id, default), UTC).replace(
                tzinfo=None)
            found = recordings.recover(call_id, row["started_at"], max(at, row["started_at"])) \
                if row["answered_at"] is not None else None
            folder.add(cut_off(row, at, found))
            ended += 1
        job = folder.flush()
        journal = self.journal
        assert journal is not None
        segments = replay.segments

        committed = threading.Event()

        def done(_session: Session) -> None:
            journal.discard(segments)
            committed.set()

        def replayed(session: Session) -> None:
            if job is not None:
                job(session)
            sa_event.listen(session, "after_commit", done, once=True)

        self._db.submit(replayed)
        return ended, committed


def run(config: Config, config_path: Path, pidfile: Path | None) -> int:
    """Run until SIGTERM/SIGINT; the exit code for the process."""
    _setup_logging(config.logging.level)
    try:
        import uvloop

        runner: Callable[..., int] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    return runner(serve(config, config_path, pidfile))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


class Pbx:
    """A running PBX (used by :func:`serve` and by tests that embed it)."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.listening: list[tuple[str, str, int]] = []
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False

    async def start(self) -> None:
        config = self.config
        sip = config.sip
        self.engine = open_engine(config.storage.database)
        # Alembic revisions bring any database to the current schema (a new one, one made by
        # an older version); a database from a newer version is refused (SchemaError).
        await asyncio.to_thread(schema.upgrade, self.engine)
        self.db = WriteBehind(self.engine)
        self._sync_users(config)
        registrar = Registrar(
            min_expires=sip.min_expires,
            max_expires=sip.max_expires,
            default_expires=sip.default_expires,
            max_contacts=max((u.max_contacts for u in config.users), default=5),
        )
        restored = registrar.load(load_bindings(self.engine), time.time())
        self.layer = TransactionLayer(TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4))
        self.relay = RtpRelay(PortAllocator(*config.media.rtp_ports),
                              shared_port=config.media.shared_port)
        self.media_address = config.advertised_address()

        def find_user(name: str) -> User | None:
            return self.app.find_user(name)

        self.auth = Authenticator(sip.realm, sip.nonce_ttl, find_user,
                                  algorithms=sip.auth_algorithms)
        self.binding_writer = BindingWriter()
        registration = RegistrationService(registrar, self.auth, find_user, self.binding_writer)
        self.transport = SipTransport(
            self.layer, lambda ev: self.app.handle(ev),
            max_message_size=sip.max_message_size, server_header=sip.user_agent,
        )
        bind_host = sip.listen[0].host
        self.webhooks = WebhookWorker(self.engine, config.crm.webhooks, config.crm.retry)
        self.records = DbRecordSink(self.db, self.webhooks, self._journal(config),
                                    region=config.dialplan.region)
        self.records.set_webhooks(config)
        self.recordings = Recordings(config.storage.recordings, config.recording.format)
        if self.records.journal is not None:
            # Before anything can start a call: what a killed PBX left is finished first.
            await self.records.recover(self.engine, self.recordings)
        self.app = SipApp(
            config, self.layer, self.relay, self.records, registration, self.auth,
            self.transport.flush, self.transport.local_address, self.media_address,
            bind_host,
        )
        self.app.presence = Presence(self.db.submit)
        self.trunk_registrations = TrunkRegistrations(self.app)
        away = self.app.presence.load(self.engine)
        # `pbx run` resolves the prompts with the config; a Config built in code is resolved
        # here, off the loop. Each held call gets its own looping copy of the music, from
        # whatever the latest reload resolved.
        prompts = config.resolved_prompts
        if prompts is None:
            prompts = await asyncio.to_thread(resolve, config)
            for warning in prompts.warnings:
                logger.warning("%s", warning)
        self.prompts: Prompts = prompts
        self.app.prompts = prompts
        self.app.hold_music = lambda: self.prompts.hold_music()
        self.app.recordings = self.recordings
        self.caller_lookup = CallerLookup(self.engine, config.dialplan.region,
                                          config.crm.lookup_order)
        self.events = EventHub(self.caller_lookup.match,
                               self._create_lead if config.crm.create_leads else None)
        self.records.hub = self.events
        self.app.on_offer = self.events.offered
        # The recording quota gates new recordings; retention runs hourly.
        self.governance = RecordingGovernance(
            Governance(self.engine, config.dialplan.region, config.storage.recordings),
            self.records.emit, self.events.notify)
        self.governance.configure(config.recording.quota_minutes, config.recording.retention)
        self.records.governance = self.governance
        self.recordings.gate = self.governance.allow
        await self.governance.start()
        # Reminders of scheduled calls go out as events at their time.
        self.scheduled_calls = ScheduledCalls(self.engine, config.dialplan.region)
        self.reminders = ReminderLoop(self.scheduled_calls, self.events.reminder)
        self.reminders.start()
        self.queues = Queues(self.app, self.app.calls)
        self.queues.lookup = self._lookup
        self.app.calls.name_lookup = self.caller_lookup.match
        self.app.calls.queues = self.queues
        self.app.calls.services.update(agent_services(self.queues))
        self.queues.start()
        for spec in sip.listen:
            host, port = await self.transport.listen(ListenSpec(spec.transport, spec.host,
                                                                spec.port))
            self.listening.append((spec.transport, host, port))
            logger.info("listening on %s:%s:%d", spec.transport, host, port)
        logger.info("media address %s, RTP ports %d-%d; %d registrations restored; %d users "
                    "on do-not-disturb or offline", self.media_address, *config.media.rtp_ports,
                    restored, away)
        self.http: HttpServer | None = None
        if config.http.enabled:
            self.crm = CrmControl(
                CrmQueries(self.engine, config.dialplan.region,
                           webhooks=lambda: self.config.crm.webhooks,
                           on_outbox_commit=self.webhooks.wake),
                config.storage.recordings, finished=self.recordings.finished)
            self.call_imports = CallImports(self.engine, config.dialplan.region)
            self.call_imports.order = config.crm.lookup_order
            self.scheduling = SchedulingControl(self.scheduled_calls, self.call_imports)
            app = create_app(QueueControlImpl(self.queues), lambda: self.config.http.api_keys,
                             self.crm, self.webhooks, self.events, ClickToCall(self.app),
                             self.scheduling, self.governance, self._users)
            self.http = HttpServer(app, config.http.host, config.http.port)
            await self.http.start()
            logger.info("HTTP API on http://%s:%d/api/v1", config.http.host, self.http.port)
        # Once listening, so the REGISTERs carry the address the provider should call.
        self.trunk_registrations.apply(config.trunks)
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._tick())
        self._record_flusher = loop.create_task(self._flush_records())
        self.webhooks.start()
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's generations, and collect the young generation less often, so that a
        # collection over thousands of live calls does not stall the loop long enough for the
        # SIP socket's buffer to overflow.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 50, 1_000)

    def _sync_users(self, config: Config) -> None:
        """The users table of the CRM store says what the config says (in the writer)."""
        users = [{"id": u.id, "extension": u.extension, "name": u.name, "role": u.role,
                  "department": u.department, "caller_id": u.caller_id}
                 for u in config.users]
        now = datetime.now(UTC).replace(tzinfo=None)
        self.db.submit(lambda session: sync_users(session, users, now))

    def _users(self) -> list[UserInfo]:
        """The users of the running config, with their phones' state (for the API)."""
        app = self.app
        return [UserInfo(id=u.id, extension=u.extension, name=u.name, role=u.role,
                         department=u.department, caller_id=u.caller_id,
                         presence=app.presence.get(u.id).value,
                         registered=len(app.lookup(u.id)))
                for u in self.config.users]

    @staticmethod
    def _journal(config: Config) -> RecordJournal | None:
        try:
            return RecordJournal(config.storage.journal_dir)
        except JournalLocked:
            raise  # another PBX runs on it: starting would end its calls
        except OSError as exc:
            logger.error("no call-record journal (%s): a killed PBX would lose the records of "
                         "its last moments and of the calls it had open", exc)
            return None

    async def _tick(self) -> None:
        """Once a second: expire registrations (the registrar is pure, this is its clock) and
        end calls whose media stopped."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self.app.registration.expire(time.time())
                if self.records.journal is not None:
                    self.records.journal.touch()
                self._save_bindings()
                self.transport.close_stalled()
                self.recordings.tick(asyncio.get_running_loop().time())
                self.app.calls.check_media(asyncio.get_running_loop().time(),
                                           self.config.media.rtp_timeout)
                self.transport.flush()
            except Exception:
                logger.exception("housekeeping failed")

    async def _flush_records(self) -> None:
        """Every 200 ms: call records that changed go to the database in one statement."""
        while True:
            await asyncio.sleep(0.2)
            try:
                self.records.flush()
            except Exception:
                logger.exception("flushing call records failed")

    def _lookup(self, number: str) -> tuple[Match | None, str | None]:
        """The CRM record and the last agent of a caller (blocking: run in a thread)."""
        agents = [u.id for u in self.config.users]
        return self.caller_lookup.match(number), self.caller_lookup.last_agent(number, agents)

    def _create_lead(self, number: str, name: str) -> Match | None:
        """A new lead for an unknown outside caller, if ``crm.create_leads`` (blocking: run
        in a thread)."""
        region = self.config.dialplan.region
        if not self.config.crm.create_leads or normalise(number, region) is None:
            return None
        with Session(self.engine) as session, session.begin():
            create_lead(session, first_name=name or number, phones=[(number, "")],
                        region=region)
        logger.info("caller %s is a new lead", number)
        return self.caller_lookup.match(number)

    def _save_bindings(self) -> None:
        job = self.binding_writer.flush()
        if job is not None:
            self.db.submit(job)

    def reload(self) -> None:
        """SIGHUP: reload the config in a task. Prompts are fetched and spoken in a worker
        thread, so calls go on meanwhile; a SIGHUP during a reload runs one more after it."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reload_again = True
        self._reloading = asyncio.get_running_loop().create_task(self._reload_until_current())

    async def _reload_until_current(self) -> None:
        while self._reload_again:
            self._reload_again = False
            await self.reload_now()

    async def reload_now(self) -> bool:
        """Re-read the config file and resolve its prompts; apply both if valid. Returns
        whether they were applied."""
        if self.config_path is None:
            return False
        try:
            new = await asyncio.to_thread(load_resolved, self.config_path, self.prompts)
        except ConfigError as e:
            logger.error("reload refused, keeping the running config:\n%s", e)
            return False
        except OSError as e:
            logger.error("reload refused, cannot read %s: %s", self.config_path, e)
            return False
        applied, kept = merge_reload(self.config, new)
        for key in kept:
            logger.warning("reload: %s changed but needs a restart; keeping the old value", key)
        self.auth.reconfigure(applied.sip.realm, applied.sip.nonce_ttl, applied.sip.auth_algorithms)
        prompts = applied.resolved_prompts
        assert prompts is not None
        for warning in prompts.warnings:
            logger.warning("reload: %s", warning)
        self.config = applied
        self.prompts = prompts
        self.app.prompts = prompts
        self.app.apply_config(applied)
        self.queues.apply_config(applied)
        self.trunk_registrations.apply(applied.trunks)
        self.records.set_webhooks(applied)
        self._sync_users(applied)
        self.caller_lookup.set_order(applied.crm.lookup_order)
        if self.http is not None:
            self.call_imports.order = applied.crm.lookup_order
        self.governance.configure(applied.recording.quota_minutes, applied.recording.retention)
        self.webhooks.set_webhooks(applied.crm.webhooks, applied.crm.retry)
        logging.getLogger().setLevel(applied.logging.level.upper())
        logger.info("config reloaded: %d users", len(applied.users))
        return True

    async def stop(self) -> None:
        await self.queues.stop()
        if self.http is not None:
            await self.http.stop()
            self.crm.close()
            self.scheduling.close()
        await self.reminders.stop()
        await self.governance.stop()
        for call in list(self.app.calls.calls.values()):
            self.app.calls.hangup(call, "PBX shutting down")
        self.app.calls.local.hangup_all("PBX shutting down")
        self.transport.flush()
        await self.trunk_registrations.stop()  # unbind at the providers (Expires: 0)
        await asyncio.sleep(0.2)  # let the BYEs leave before the sockets close
        for task in (self._housekeeping, self._record_flusher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.records.flush()
        self.events.close()  # after the last calls: their look-ups may still be asked for
        self.app.playback.close()
        await asyncio.wrap_future(self.recordings.close())
        self.recordings.shutdown()
        await self.transport.close()
        await self.relay.close()
        self._save_bindings()
        await asyncio.to_thread(self.db.flush)
        if self.records.journal is not None:
            self.records.journal.close()
        await self.webhooks.stop()  # what it could not send stays pending for the next start
        self.db.close()
        self.engine.dispose()


async def serve(config: Config, config_path: Path, pidfile: Path | None) -> int:
    pbx = Pbx(config, config_path)
    try:
        await pbx.start()
    except (OSError, schema.SchemaError) as e:  # JournalLocked is an OSError
        logger.error("cannot start: %s", e)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pbx.reload)
    if pidfile is not None:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{os.getpid()}\n")
    logger.info("PBX ready")
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await pbx.stop()
        if pidfile is not None:
            with contextlib.suppress(OSError):
                pidfile.unlink()
    return 0
