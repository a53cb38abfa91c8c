"""telegram_sim.py across real OS processes: events reach other processes, and concurrent
senders into one chat lose and double nothing."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import helpers
from helpers import clean_env, wait_until_async

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 30

CLIENT = """
import asyncio, sys
from pathlib import Path
from telethon import TelegramClient, events
import telegram_sim

folder, world = Path(sys.argv[1]), sys.argv[2]

async def main():
    client = TelegramClient(str(folder / folder.name), telegram_sim.SIM_API_ID, "0" * 32)
    telegram_sim.attach(client, world)
    await client.connect()
    try:
        await run(client, *sys.argv[3:])
    finally:
        await client.disconnect()
"""

WATCHER = CLIENT + """
async def run(client, expected):
    seen, done = [], asyncio.Event()

    def note(*words):
        print(*words, flush=True)
        seen.append(words)
        if len(seen) >= int(expected):
            done.set()

    @client.on(events.NewMessage)
    async def on_message(event):
        note("MSG", event.chat_id, event.message.id, event.message.text)

    @client.on(events.MessageEdited)
    async def on_edit(event):
        note("EDIT", event.message.id, event.message.text)

    @client.on(events.MessageDeleted)
    async def on_delete(event):
        note("DELETE", ",".join(map(str, sorted(event.deleted_ids))))

    await client.get_dialogs()
    print("READY", flush=True)
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.sleep(0.5)          # anything doubled would arrive now

asyncio.run(main())
"""

SENDER = CLIENT + """
async def run(client, chat, count):
    for number in range(int(count)):
        message = await client.send_message(chat, f"{folder.name} {number}")
        print("SENT", message.id, flush=True)

asyncio.run(main())
"""


def start(script: str, *args: str) -> subprocess.Popen:
    return helpers.start([sys.executable, "-c", script, *args],
                         env=clean_env(PYTHONPATH=str(ROOT)))


async def read_line(process: subprocess.Popen) -> str:
    """The child's next line of output, read off the event loop."""
    return await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), CHILD_TIMEOUT)


async def wait_ready(process: subprocess.Popen) -> None:
    line = await read_line(process)
    assert line.strip() == "READY", (line, process.stderr.read())


async def finish(process: subprocess.Popen) -> list[list[str]]:
    done = await asyncio.to_thread(helpers.finish, process, CHILD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return [line.split(" ", 3) for line in done.stdout.splitlines() if line]


async def test_new_message_event_in_a_second_process(sim_world, sim_account_folder,
                                                     sim_client):
    writer_folder = sim_account_folder("writer")
    reader_folder = sim_account_folder("reader")
    chat = sim_world.create_channel("Room", username="room", kind="megagroup",
                                    owner="writer", members=["reader"])
    listener = start(WATCHER, str(reader_folder), str(sim_world.path), "3")
    await wait_ready(listener)
    writer = await sim_client(writer_folder)
    sent = [await writer.send_message("@room", f"hello {n}") for n in range(2)]
    album = await writer.send_file("@room", [telegram_sim_png(), telegram_sim_png()])
    lines = await finish(listener)
    assert [line[0] for line in lines] == ["MSG"] * 4          # 2 texts + 2 album items
    assert [int(line[2]) for line in lines] == [m.id for m in sent + album]
    assert {int(line[1]) for line in lines} == {sim_world.peer_id(chat)}
    assert [line[3] if len(line) > 3 else "" for line in lines][:2] == ["hello 0", "hello 1"]


def telegram_sim_png() -> bytes:
    import telegram_sim
    return telegram_sim._DEMO_PNG


async def test_two_processes_send_at_once_nothing_lost_or_doubled(sim_world,
                                                                   sim_account_folder):
    folders = [sim_account_folder(name) for name in ("one", "two", "watcher")]
    chat = sim_world.create_channel("Busy", username="busy", kind="megagroup", owner="one",
                                    members=["two", "watcher"])
    sim_world.configure(rate_limits=False)          # about concurrency, not budgets
    per_sender = 40
    listener = start(WATCHER, str(folders[2]), str(sim_world.path), str(2 * per_sender))
    await wait_ready(listener)
    senders = [start(SENDER, str(folder), str(sim_world.path), "@busy", str(per_sender))
               for folder in folders[:2]]
    sent = [await finish(sender) for sender in senders]
    seen = await finish(listener)

    stored = sim_world.messages(chat)[1:]                      # after the creation message
    texts = sorted(m.message for m in stored)
    assert texts == sorted(f"{name} {n}" for name in ("one", "two") for n in range(per_sender))
    assert [m.id for m in stored] == list(range(2, 2 + 2 * per_sender))
    sent_ids = [int(line[1]) for lines in sent for line in lines]
    assert sorted(sent_ids) == [m.id for m in stored]          # each id returned once
    assert sorted(int(line[2]) for line in seen) == [m.id for m in stored]   # each seen once


async def test_edits_and_deletions_reach_a_second_process(sim_world, sim_account_folder,
                                                          sim_client):
    writer_folder = sim_account_folder("writer")
    watcher_folder = sim_account_folder("watcher")
    chat = sim_world.create_channel("Room", username="room", kind="megagroup",
                                    owner="writer", members=["watcher"])
    first = sim_world.post(chat, "first")
    second = sim_world.post(chat, "second")
    third = sim_world.post(chat, "third")
    watcher = start(WATCHER, str(watcher_folder), str(sim_world.path), "4")
    await wait_ready(watcher)
    writer = await sim_client(writer_folder)

    async def next_line() -> list[str]:
        return (await read_line(watcher)).split()

    await writer.edit_message("@room", first, "first, edited by a client")
    assert await next_line() == ["EDIT", str(first), "first,", "edited", "by", "a", "client"]
    await writer.delete_messages("@room", [second])
    assert await next_line() == ["DELETE", str(second)]
    sim_world.edit(chat, third, "third, edited by the operator")
    assert await next_line() == ["EDIT", str(third), "third,", "edited", "by", "the",
                                 "operator"]
    sim_world.delete(chat, [first, third])
    assert await next_line() == ["DELETE", f"{first},{third}"]
    assert await finish(watcher) == []


async def test_edit_and_delete_caught_up_after_a_gap(sim_world, sim_account_folder,
                                                     sim_client):
    from telethon import events
    from telethon.tl import functions, types

    sim_world.add_account("writer")
    reader_folder = sim_account_folder("reader")
    chat = sim_world.create_channel("Room", username="room", kind="megagroup",
                                    owner="writer", members=["reader"])
    target = sim_world.post(chat, "to edit")
    doomed = sim_world.post(chat, "to delete")
    reader = await sim_client(reader_folder)
    seen = []

    @reader.on(events.NewMessage)
    async def on_new(event):
        seen.append(("new", event.message.text))

    @reader.on(events.MessageEdited)
    async def on_edit(event):
        seen.append(("edit", event.message.text))

    @reader.on(events.MessageDeleted)
    async def on_delete(event):
        seen.append(("delete", event.deleted_ids))

    sim_world.post(chat, "before")                      # the client learns the pts here
    await wait_until_async(lambda: seen, what="the first message's event")
    sim_world.inject_fault("LOSE_UPDATES", account="reader", times=2)
    sim_world.edit(chat, target, "edited while lost")
    sim_world.delete(chat, [doomed])
    await asyncio.sleep(0.5)
    assert seen == [("new", "before")]
    sim_world.post(chat, "after the gap")
    await wait_until_async(lambda: len(seen) == 2, what="the message after the gap")
    # Telethon applies a ChannelDifference's pts before its other_updates, so it fires no
    # events for the edit and deletion it fetched; what it fetched is checked directly.
    assert seen == [("new", "before"), ("new", "after the gap")]
    assert sim_world.counters("reader")["GetChannelDifferenceRequest"] >= 1
    channel = await reader.get_input_entity("@room")
    before = sim_world.messages(chat)[-1].id - 1                # "before" is the one before
    diff = await reader(functions.updates.GetChannelDifferenceRequest(
        channel=channel, filter=types.ChannelMessagesFilterEmpty(), pts=before, limit=100))
    assert [type(u).__name__ for u in diff.other_updates] == [
        "UpdateEditChannelMessage", "UpdateDeleteChannelMessages"]
    assert diff.other_updates[0].message.message == "edited while lost"
    assert diff.other_updates[1].messages == [doomed]
    assert [m.message for m in diff.new_messages] == ["after the gap"]
    assert (await reader.get_messages("@room", ids=target)).text == "edited while lost"
    assert await reader.get_messages("@room", ids=doomed) is None


async def test_a_client_without_updates_is_sent_none(sim_world, sim_account_folder,
                                                     sim_client):
    """receive_updates=False (every request in invokeWithoutUpdates, as for the cloner's
    --once) subscribes the connection to nothing; its requests are answered as usual."""
    from telethon import events

    sim_world.add_account("writer")
    quiet_folder, listening_folder = sim_account_folder("quiet"), sim_account_folder("ear")
    chat = sim_world.create_channel("Room", username="room", kind="megagroup",
                                    owner="writer", members=["quiet", "ear"])
    quiet = await sim_client(quiet_folder, receive_updates=False)
    listening = await sim_client(listening_folder)
    heard: dict[str, list[str]] = {"quiet": [], "ear": []}
    for name, client in (("quiet", quiet), ("ear", listening)):
        client.add_event_handler(
            lambda event, name=name: heard[name].append(event.message.text),
            events.NewMessage)
    for text in ("one", "two"):             # the quiet client polls between the two
        sim_world.post(chat, text)
        await wait_until_async(lambda text=text: text in heard["ear"], what=f"{text!r}")
    assert heard == {"quiet": [], "ear": ["one", "two"]}
    assert [m.text for m in await quiet.get_messages("@room", limit=2)] == ["two", "one"]
