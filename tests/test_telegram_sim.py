"""telegram_sim.py through real TelegramClient objects: history, sends, media, topics, events."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

import pytest
from helpers import wait_until_async
from telethon import errors, events
from telethon.tl import functions, types

import telegram_sim
from telegram_sim import World

PNG = telegram_sim._DEMO_PNG


@pytest.fixture
def two_accounts(sim_world, sim_account_folder):
    """Accounts a and b with folders, a broadcast channel @source owned by a with 250
    posts, and a megagroup forum @target where both write."""
    folder_a = sim_account_folder("a", username="alice_a")
    folder_b = sim_account_folder("b")
    source = sim_world.create_channel("Source", username="source", owner="a")
    for number in range(250):
        sim_world.post(source, f"post {number}")
    target = sim_world.create_channel("Target", username="target", kind="forum", owner="a",
                                      members=["b"])
    return folder_a, folder_b, source, target


async def test_connect_get_me_and_entities(two_accounts, sim_client):
    folder_a, _, source, _ = two_accounts
    client = await sim_client(folder_a)
    assert await client.is_user_authorized()
    me = await client.get_me()
    assert me.username == "alice_a" and me.is_self
    channel = await client.get_entity("@source")
    assert channel.id == source and channel.broadcast and channel.creator
    assert (await client.get_entity(source)).title == "Source"       # cached in .session
    full = await client(functions.channels.GetFullChannelRequest(channel))
    assert full.full_chat.participants_count == 1
    with pytest.raises(ValueError, match="nobody_here"):     # Telethon's wording of
        await client.get_entity("@nobody_here")              # USERNAME_NOT_OCCUPIED


async def test_iter_messages_forward_and_reverse_with_min_id(two_accounts, sim_client,
                                                             sim_world):
    folder_a, _, source, _ = two_accounts
    client = await sim_client(folder_a)
    newest_first = [m.id async for m in client.iter_messages("@source", limit=None,
                                                             wait_time=0)]
    assert newest_first == list(range(251, 0, -1))          # id 1 is the creation message
    oldest_first = [m.id async for m in client.iter_messages("@source", reverse=True,
                                                             min_id=100, wait_time=0)]
    assert oldest_first == list(range(101, 252))             # min_id is exclusive
    texts = [m.text async for m in client.iter_messages("@source", reverse=True, min_id=1,
                                                        max_id=5)]
    assert texts == ["post 0", "post 1", "post 2"]           # max_id exclusive too
    # pages of 100: 100+100+51; 100+51 and Telethon's closing empty page; one page
    assert sim_world.counters("a")["GetHistoryRequest"] == 3 + 3 + 1


async def test_forward_100_ids_in_one_request(two_accounts, sim_client, sim_world):
    folder_a, _, source, target = two_accounts
    sim_world.configure(rate_limits=False)          # 100 sends at once: about the cap only
    client = await sim_client(folder_a)
    before = sim_world.counters("a").get("ForwardMessagesRequest", 0)
    forwarded = await client.forward_messages("@target", list(range(2, 102)), "@source")
    assert sim_world.counters("a")["ForwardMessagesRequest"] == before + 1
    assert [m.text for m in forwarded] == [f"post {n}" for n in range(100)]
    assert forwarded[0].fwd_from.channel_post == 2
    assert forwarded[0].fwd_from.from_id == types.PeerChannel(source)
    stored = sim_world.messages(target)
    assert [m.message for m in stored[1:]] == [f"post {n}" for n in range(100)]
    album = sim_world.post_album(source, [PNG, PNG], captions=["one", "two"])
    copies = await client.forward_messages("@target", album, "@source")
    groups = {m.grouped_id for m in copies}
    assert len(groups) == 1 and None not in groups
    assert groups != {m.grouped_id for m in sim_world.messages(source)[-2:]}
    assert [m.text for m in copies] == ["one", "two"]


async def test_album_with_captions_arrives_as_one_album(two_accounts, sim_client, sim_world):
    folder_a, folder_b, _, target = two_accounts
    sender, receiver = await sim_client(folder_a), await sim_client(folder_b)
    albums = []

    async def on_album(event):
        albums.append([(m.id, m.text) for m in event.messages])
    receiver.add_event_handler(on_album, events.Album)
    await receiver.get_dialogs()
    sent = await sender.send_file("@target", [PNG, PNG, b"plain bytes"],
                                  caption=["first", "second", "third"])
    assert len({m.grouped_id for m in sent}) == 1 and sent[0].grouped_id
    assert [m.text for m in sent] == ["first", "second", "third"]
    await wait_until_async(lambda: albums, what="the album's event")
    assert albums == [[(m.id, m.text) for m in sent]]
    assert [m.grouped_id for m in sim_world.messages(target)[1:]] == [sent[0].grouped_id] * 3


async def test_replies_and_topic_posts(two_accounts, sim_client, sim_world):
    folder_a, folder_b, _, target = two_accounts
    client = await sim_client(folder_a)
    created = await client(functions.messages.CreateForumTopicRequest(
        peer="@target", title="News", random_id=telegram_sim._random_long()))
    topic = next(u.message.id for u in created.updates
                 if isinstance(u, types.UpdateNewChannelMessage))
    assert isinstance(next(u.message.action for u in created.updates
                           if isinstance(u, types.UpdateNewChannelMessage)),
                      types.MessageActionTopicCreate)
    top_post = await client.send_message("@target", "in News", reply_to=topic)
    assert top_post.reply_to.forum_topic and top_post.reply_to.reply_to_msg_id == topic
    assert top_post.reply_to.reply_to_top_id is None
    reply = await client.send_message("@target", "reply in News", reply_to=top_post.id)
    assert (reply.reply_to.reply_to_msg_id, reply.reply_to.reply_to_top_id) \
        == (top_post.id, topic)
    general = await client.send_message("@target", "in General")
    assert general.reply_to is None
    in_topic = [m.text async for m in client.iter_messages("@target", reply_to=topic)]
    assert in_topic == ["reply in News", "in News", None]      # newest first, service last
    posted = await client(functions.messages.ForwardMessagesRequest(
        from_peer="@source", id=[2, 3], to_peer="@target", top_msg_id=topic,
        random_id=[telegram_sim._random_long(), telegram_sim._random_long()],
        drop_author=True))
    copies = [u.message for u in posted.updates if isinstance(u, types.UpdateNewChannelMessage)]
    assert [m.message for m in copies] == ["post 0", "post 1"]
    assert all(m.fwd_from is None and m.reply_to.reply_to_msg_id == topic for m in copies)
    with pytest.raises(errors.RPCError, match="REPLY_TO_INVALID"):
        await client.send_message("@target", "to nowhere", reply_to=9999)


async def test_media_bytes_round_trip(two_accounts, sim_client, sim_world, tmp_path):
    folder_a, folder_b, _, _ = two_accounts
    sender, reader = await sim_client(folder_a), await sim_client(folder_b)
    payload = os.urandom(11 * 1024 * 1024 + 123)         # > 10 MB: SaveBigFilePart
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    sent_doc = await sender.send_file("@target", path, caption="big file")
    picture = tmp_path / "picture.png"
    picture.write_bytes(PNG)
    sent_photo = await sender.send_file("@target", picture, caption="a photo")
    assert sim_world.counters("a")["SaveBigFilePartRequest"] >= 22
    doc, photo = await reader.get_messages("@target", ids=[sent_doc.id, sent_photo.id])
    assert doc.file.name == "big.bin" and doc.text == "big file"
    assert await reader.download_media(doc, file=bytes) == payload
    assert isinstance(photo.media, types.MessageMediaPhoto)
    assert await reader.download_media(photo, file=bytes) == PNG


async def test_flood_wait_under_threshold_is_slept(two_accounts, sim_client, sim_world,
                                                   caplog):
    folder_a, _, _, _ = two_accounts
    client = await sim_client(folder_a, flood_sleep_threshold=60)
    sim_world.inject_fault("FLOOD_WAIT", seconds=1, account="a", request="SendMessage",
                           times=1)
    with caplog.at_level(logging.INFO, logger="telethon"):
        message = await client.send_message("@target", "after the wait")
    assert "Sleeping for 1s (0:00:01) on SendMessageRequest flood wait" in caplog.text
    assert message.text == "after the wait"
    assert sim_world.counters("a")["SendMessageRequest"] == 2      # refused, then sent


async def test_flood_wait_over_threshold_raises_with_seconds(two_accounts, sim_client,
                                                             sim_world):
    folder_a, _, _, _ = two_accounts
    client = await sim_client(folder_a, flood_sleep_threshold=10)
    sim_world.inject_fault("FLOOD_WAIT", seconds=3600, account="a", request="SendMessage",
                           after=2, times=1)
    await client.send_message("@target", "one")
    await client.send_message("@target", "two")
    with pytest.raises(errors.FloodWaitError) as caught:
        await client.send_message("@target", "three")
    assert caught.value.seconds == 3600
    assert [m.message for m in sim_world.messages("@target")[1:]] == ["one", "two"]


async def test_flood_wait_at_a_rate_per_minute(two_accounts, sim_client, sim_world):
    folder_a, _, _, _ = two_accounts
    client = await sim_client(folder_a, flood_sleep_threshold=0)
    sim_world.inject_fault("FLOOD_WAIT", rate_per_minute=3, request="SendMessage")
    for number in range(3):
        await client.send_message("@target", f"m{number}")
    with pytest.raises(errors.FloodWaitError) as caught:
        await client.send_message("@target", "m3")
    assert 1 <= caught.value.seconds <= 61


async def test_slowmode_and_peer_flood(two_accounts, sim_client, sim_world):
    folder_a, folder_b, _, _ = two_accounts
    sim_world.create_channel("Slow", username="slowgroup", kind="megagroup",
                                    owner="a", members=["b"], slowmode_seconds=30)
    client = await sim_client(folder_b, flood_sleep_threshold=0)
    await client.send_message("@slowgroup", "first")
    with pytest.raises(errors.SlowModeWaitError) as caught:
        await client.send_message("@slowgroup", "second")
    assert 28 <= caught.value.seconds <= 30
    sim_world.inject_fault("PEER_FLOOD", account="b")
    with pytest.raises(errors.PeerFloodError):
        await client.send_message("@target", "limited")


async def test_random_id_reuse_returns_the_original(two_accounts, sim_client, sim_world):
    folder_a, _, _, target = two_accounts
    client = await sim_client(folder_a)
    random_id = telegram_sim._random_long()
    request = functions.messages.SendMessageRequest(peer="@target", message="once",
                                                    random_id=random_id)
    first = await client(request)
    again = await client(functions.messages.SendMessageRequest(
        peer="@target", message="once", random_id=random_id))
    ids = [[u.id for u in r.updates if isinstance(u, types.UpdateMessageID)]
           for r in (first, again)]
    assert ids[0] == ids[1]
    assert [m.message for m in sim_world.messages(target)[1:]] == ["once"]


async def test_random_id_duplicate_error_mode(tmp_path, sim_client):
    world = World.create(tmp_path / "strict.db", random_id_mode="error")
    world.add_account("a")
    folder = world.make_session_folder(tmp_path / "strict" / "a", "a")
    chat = world.create_channel("Group", username="strictgroup", kind="megagroup", owner="a")
    peer = "@strictgroup"
    from telethon import TelegramClient
    client = TelegramClient(str(folder / "a"), 1, "x", raise_last_call_error=True,
                            request_retries=0)
    telegram_sim.attach(client, world.path)
    await client.connect()
    try:
        random_id = telegram_sim._random_long()
        await client(functions.messages.SendMessageRequest(peer=peer, message="x",
                                                           random_id=random_id))
        with pytest.raises(errors.RandomIdDuplicateError):
            await client(functions.messages.SendMessageRequest(peer=peer, message="x",
                                                               random_id=random_id))
    finally:
        await client.disconnect()
    assert [m.message for m in world.messages(chat)[1:]] == ["x"]
    world.close()


async def test_noforwards_chat_refuses_forwarding(two_accounts, sim_client, sim_world):
    folder_a, _, _, target = two_accounts
    locked = sim_world.create_channel("Locked", username="locked", owner="a",
                                      noforwards=True)
    sim_world.post(locked, "protected")
    client = await sim_client(folder_a)
    with pytest.raises(errors.ChatForwardsRestrictedError):
        await client.forward_messages("@target", [2], "@locked")
    assert len(sim_world.messages(target)) == 1
    message = (await client.get_messages("@locked", ids=[2]))[0]
    assert message.noforwards and await client.download_media(message, file=bytes) is None


async def test_access_rules(two_accounts, sim_client, sim_world):
    folder_a, folder_b, _, _ = two_accounts
    private = sim_world.create_channel("Private", owner="a")
    client_a, client_b = await sim_client(folder_a), await sim_client(folder_b)
    await client_a.get_dialogs()                 # as on Telegram: ids resolve once seen
    entity = await client_a.get_input_entity(sim_world.peer_id(private))
    hidden = types.InputPeerChannel(entity.channel_id, entity.access_hash)
    with pytest.raises(errors.ChannelPrivateError):
        await client_b(functions.messages.GetHistoryRequest(
            peer=hidden, offset_id=0, offset_date=None, add_offset=0, limit=10,
            max_id=0, min_id=0, hash=0))
    with pytest.raises(errors.ChatWriteForbiddenError):
        await client_b.send_message("@source", "not an admin")
    await client_b(functions.channels.JoinChannelRequest("@source"))
    with pytest.raises(errors.ChatWriteForbiddenError):
        await client_b.send_message("@source", "still not an admin")
    await client_b.send_read_acknowledge("@source", max_id=10)
    dialogs = [d.name async for d in client_b.iter_dialogs()]
    assert set(dialogs) == {"Source", "Target"}


async def test_login_flow_and_revoked_session(tmp_path, sim_world, sim_account_folder,
                                              sim_client):
    folder = sim_account_folder("a")
    sim_world.add_account("fresh", phone="+15550009999")
    (tmp_path / "login").mkdir()
    client = await sim_client(tmp_path / "login")
    assert not await client.is_user_authorized()
    assert await client.get_me() is None
    await client.send_code_request("+15550009999")
    with pytest.raises(errors.PhoneCodeInvalidError):
        await client.sign_in("+15550009999", code="00000")
    me = await client.sign_in("+15550009999", code=telegram_sim.DEFAULT_LOGIN_CODE)
    assert me.phone == "15550009999"
    assert (await client.get_me()).id == me.id
    assert sim_world.revoke_session("a") == 1
    revoked = await sim_client(folder)
    assert not await revoked.is_user_authorized()
    assert await revoked.get_me() is None


async def test_dropped_connection_resends_without_doubling(two_accounts, sim_client,
                                                          sim_world):
    folder_a, _, _, target = two_accounts
    client = await sim_client(folder_a, retry_delay=0)
    sim_world.inject_fault("DISCONNECT", request="SendMessage", times=2, executed=True)
    message = await client.send_message("@target", "reply lost twice")
    assert sim_world.counters("a")["SendMessageRequest"] == 3     # sent, resent, resent
    assert [m.message for m in sim_world.messages(target)[1:]] == ["reply lost twice"]
    assert message.id == 2 and client.is_connected()


async def test_connection_lost_for_good_disconnects(two_accounts, sim_client, sim_world):
    folder_a, _, _, target = two_accounts
    client = await sim_client(folder_a, retry_delay=0, connection_retries=2)
    fault = sim_world.inject_fault("DISCONNECT", account="a")
    with pytest.raises(ConnectionError):
        await client.send_message("@target", "never sent")
    assert not client.is_connected()
    sim_world.clear_faults(fault)
    await client.connect()
    assert await client.is_user_authorized()
    await client.send_message("@target", "after reconnecting")
    assert [m.message for m in sim_world.messages(target)[1:]] == ["after reconnecting"]


async def test_disconnect_ends_every_task_of_the_sender(two_accounts, sim_client, sim_world):
    """The sender's tasks (work and poll loops, Telethon's reconnect callback after a drop,
    the closing of a connection given up) are kept and have ended once disconnect() returns."""
    folder_a, _, _, target = two_accounts
    client = await sim_client(folder_a, retry_delay=0, connection_retries=1)
    sim_world.inject_fault("DISCONNECT", request="SendMessage", times=1)
    await client.send_message("@target", "resent once")
    fault = sim_world.inject_fault("DISCONNECT", account="a")
    with pytest.raises(ConnectionError):
        await client.send_message("@target", "never sent")
    sim_world.clear_faults(fault)
    await client.disconnect()
    names = ("SimulatedSender.", "_handle_auto_reconnect")
    left = [task for task in asyncio.all_tasks() if not task.done()
            and any(name in task.get_coro().__qualname__ for name in names)]
    assert left == []
    assert [m.message for m in sim_world.messages(target)[1:]] == ["resent once"]


async def test_lost_updates_are_caught_up_by_channel_difference(two_accounts, sim_client,
                                                                sim_world):
    folder_a, folder_b, _, target = two_accounts
    receiver = await sim_client(folder_b)
    seen = []

    async def on_message(event):
        seen.append(event.message.text)
    receiver.add_event_handler(on_message, events.NewMessage)
    sim_world.post(target, "before")                     # the client learns the pts here
    await wait_until_async(lambda: seen, what="the first message's event")
    sim_world.inject_fault("LOSE_UPDATES", account="b", times=2)
    sim_world.post(target, "lost 1")
    sim_world.post(target, "lost 2")
    await asyncio.sleep(0.5)
    assert seen == ["before"]
    sim_world.post(target, "after the gap")
    await wait_until_async(lambda: len(seen) == 4, what="the messages lost in the gap")
    assert seen == ["before", "lost 1", "lost 2", "after the gap"]
    assert sim_world.counters("b")["GetChannelDifferenceRequest"] >= 1
    assert sim_world.faults()[0]["fired"] == 2


async def test_connect_to_a_missing_or_foreign_world_fails_clearly(tmp_path, sim_world,
                                                                   sim_account_folder):
    from telethon import TelegramClient
    folder = sim_account_folder("a")
    foreign = tmp_path / "checkpoint.db"
    sqlite3.connect(foreign).execute("CREATE TABLE messages (x)").connection.close()
    for world_path, reason in ((tmp_path / "missing.db", "does not exist"),
                               (foreign, "not a simulated world")):
        client = TelegramClient(str(folder / "a"), 1, "x")
        telegram_sim.attach(client, world_path)
        with pytest.raises(ConnectionError, match=reason):
            await client.connect()
        assert not client.is_connected()
    tables = sqlite3.connect(foreign).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("messages",)]


async def test_catch_up_after_being_offline(two_accounts, sim_client, sim_world):
    _, folder_b, _, target = two_accounts
    seen = []

    async def on_message(event):
        seen.append(event.message.text)

    online = await sim_client(folder_b)
    online.add_event_handler(on_message, events.NewMessage)
    sim_world.post(target, "while online", by="a")
    await wait_until_async(lambda: seen, what="the message sent while online")
    await online.disconnect()                        # the channel's pts is saved in .session
    sim_world.post(target, "missed 1", by="a")
    sim_world.post(target, "missed 2", by="a")
    back = await sim_client(folder_b, catch_up=True)
    back.add_event_handler(on_message, events.NewMessage)
    await wait_until_async(lambda: len(seen) == 3, what="the messages missed while offline")
    assert seen == ["while online", "missed 1", "missed 2"]
    assert sim_world.counters("b")["GetChannelDifferenceRequest"] >= 1
