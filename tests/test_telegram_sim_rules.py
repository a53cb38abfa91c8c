"""telegram_sim.py refuses what Telegram refuses, through real TelegramClient objects:
rights, slow mode, protected content, expiring file references, rate limits."""
from __future__ import annotations

import random

import pytest
from helpers import wait_until_async
from telethon import errors, events
from telethon.tl import functions, types

import telegram_sim

PNG = telegram_sim._DEMO_PNG
PDF = b"%PDF-1.4 rules\n"


@pytest.fixture
def png(tmp_path):
    """A PNG file: Telethon sends a .png as a photo (bytes go as a document)."""
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    return path


@pytest.fixture
def room(sim_world, sim_account_folder):
    """Accounts boss (creator), mod (admin), user (member) with folders; a forum @room
    they are all in, a topic "News" in it, and a broadcast channel @news owned by boss."""
    folders = {name: sim_account_folder(name) for name in ("boss", "mod", "user")}
    chat = sim_world.create_channel("Room", username="room", kind="forum", owner="boss",
                                    admins=["mod"], members=["user"])
    topic = sim_world.create_topic(chat, "News")
    sim_world.create_channel("News", username="news", owner="boss", members=["mod"])
    return folders, chat, topic


async def test_media_rights_per_chat_and_per_member(room, png, sim_world, sim_client):
    folders, chat, _ = room
    user = await sim_client(folders["user"])
    mod = await sim_client(folders["mod"])
    sim_world.set_chat(chat, default_banned=["send_media"])
    entity = await user.get_entity("@room")
    assert entity.default_banned_rights.send_media and not entity.admin_rights
    await user.send_message("@room", "text is allowed")
    with pytest.raises(errors.ChatSendMediaForbiddenError):
        await user.send_file("@room", png)
    await mod.send_file("@room", png)                         # admins are not restricted
    sim_world.set_chat(chat, default_banned=[])
    sim_world.restrict("user", chat, ["send_photos"])
    with pytest.raises(errors.ChatSendPhotosForbiddenError):
        await user.send_file("@room", png)
    await user.send_file("@room", PDF, file_name="a.pdf")     # documents still allowed
    sim_world.restrict("user", chat, ["send_docs"])
    with pytest.raises(errors.ForbiddenError, match="CHAT_SEND_DOCS_FORBIDDEN"):
        await user.send_file("@room", PDF, file_name="a.pdf")
    sim_world.restrict("user", chat, ["send_plain"])
    with pytest.raises(errors.ChatSendPlainForbiddenError):
        await user.send_message("@room", "plain text")
    await user.send_file("@room", png, caption="a caption is not plain text")
    sim_world.restrict("user", chat, ["send_messages"])
    with pytest.raises(errors.ChatWriteForbiddenError):
        await user.send_message("@room", "nothing at all")
    assert (await user.get_entity("@room")).banned_rights.send_messages


async def test_admin_rights_channel_posts_topics_and_closed_topic(room, sim_world,
                                                                  sim_client):
    folders, chat, topic = room
    mod = await sim_client(folders["mod"])
    user = await sim_client(folders["user"])
    with pytest.raises(errors.ChatWriteForbiddenError):       # a member of a broadcast
        await mod.send_message("@news", "not an admin")
    sim_world.set_admin("mod", "@news", ["edit_messages"])
    with pytest.raises(errors.ChatWriteForbiddenError):       # admin without post_messages
        await mod.send_message("@news", "no post right")
    sim_world.set_admin("mod", "@news", ["post_messages"])
    await mod.send_message("@news", "posted")

    create = functions.messages.CreateForumTopicRequest
    await user(create(peer="@room", title="members may create topics"))
    sim_world.set_chat(chat, default_banned=["manage_topics"])
    with pytest.raises(errors.ChatAdminRequiredError):
        await user(create(peer="@room", title="no longer"))
    await mod(create(peer="@room", title="admins with manage_topics may"))
    sim_world.set_admin("mod", chat, ["post_messages"])
    with pytest.raises(errors.ChatAdminRequiredError):
        await mod(create(peer="@room", title="not without manage_topics"))

    sim_world.set_topic(chat, topic, closed=True)
    with pytest.raises(errors.BadRequestError, match="TOPIC_CLOSED"):
        await user.send_message("@room", "closed", reply_to=topic)
    boss = await sim_client(folders["boss"])
    await boss.send_message("@room", "the creator still may", reply_to=topic)
    await user.send_message("@room", "the General topic is open")


async def test_restricted_account_is_refused_every_write(room, png, sim_world, sim_client):
    folders, chat, _ = room
    sim_world.post(chat, "to forward")
    user = await sim_client(folders["user"])
    sim_world.set_account("user", restricted=True)
    with pytest.raises(errors.UserBannedInChannelError):
        await user.send_message("@room", "hello")
    with pytest.raises(errors.UserBannedInChannelError):
        await user.send_file("@room", png)
    with pytest.raises(errors.UserBannedInChannelError):
        await user.forward_messages("@room", [2], "@room")
    with pytest.raises(errors.UserBannedInChannelError):
        await user(functions.messages.CreateForumTopicRequest(peer="@room", title="t"))
    assert [m.id async for m in user.iter_messages("@room", limit=1)]    # reading works
    sim_world.set_account("user", restricted=False)
    await user.send_message("@room", "allowed again")


async def test_slow_mode(room, png, sim_world, sim_client):
    folders, chat, _ = room
    sim_world.freeze_clock()
    sim_world.set_chat(chat, slowmode_seconds=30)
    user = await sim_client(folders["user"], flood_sleep_threshold=0)
    mod = await sim_client(folders["mod"])
    first = await user.send_message("@room", "one")
    with pytest.raises(errors.SlowModeWaitError) as waited:
        await user.send_message("@room", "two")
    assert waited.value.seconds == 30
    sim_world.advance_clock(10)
    with pytest.raises(errors.SlowModeWaitError) as waited:
        await user.send_file("@room", png)
    assert waited.value.seconds == 20
    for _ in range(3):                                         # admins are exempt
        await mod.send_message("@room", "admin")
    await mod.send_file("@room", [png, png])
    sim_world.advance_clock(20)
    with pytest.raises(errors.SlowModeMultiMsgsDisabledError):
        await user.send_file("@room", [png, png])
    with pytest.raises(errors.SlowModeMultiMsgsDisabledError):
        await user.forward_messages("@room", [first.id, first.id + 1], "@room")
    await user.send_message("@room", "after the interval")
    assert (await user(functions.channels.GetFullChannelRequest("@room"))
            ).full_chat.slowmode_seconds == 30


async def test_protected_content_switched_while_clients_run(room, sim_world, sim_client,
                                                            tmp_path):
    folders, chat, _ = room
    photo_id = sim_world.post(chat, "a photo", file=PNG)
    boss = await sim_client(folders["boss"])
    message = await boss.get_messages("@room", ids=photo_id)
    await boss.forward_messages("@room", photo_id, "@room")
    sim_world.set_noforwards(chat, True)
    with pytest.raises(errors.ChatForwardsRestrictedError):
        await boss.forward_messages("@room", photo_id, "@room")
    with pytest.raises(errors.ChatForwardsRestrictedError):    # media by reference
        await boss.send_file("@news", message.media)
    assert await boss.download_media(message, file=bytes) == PNG    # downloading works
    uploaded = await boss.send_file("@news", await boss.download_media(message, file=bytes))
    assert uploaded.media                                      # a fresh upload is fine
    sim_world.set_noforwards(chat, False)
    await boss.send_file("@news", message.media)
    await boss.forward_messages("@room", photo_id, "@room")


async def test_file_reference_expires_with_world_time(room, sim_world, sim_client):
    folders, chat, _ = room
    photo_id = sim_world.post(chat, "a photo", file=PNG)
    album = sim_world.post_album(chat, [PNG, PNG])
    assert sim_world.settings()["file_reference_lifetime"] == 3600
    boss = await sim_client(folders["boss"])
    old = await boss.get_messages("@room", ids=photo_id)
    old_album = await boss.get_messages("@room", ids=album)
    assert len(old.photo.sizes) >= 2                           # several photo sizes
    assert await boss.download_media(old, file=bytes) == PNG
    sim_world.advance_clock(3600)
    with pytest.raises(errors.FileReferenceExpiredError):
        await boss.download_media(old, file=bytes)
    with pytest.raises(errors.FileReferenceExpiredError):
        await boss.send_file("@news", old.media)
    with pytest.raises(errors.BadRequestError, match="FILE_REFERENCE_0_EXPIRED"):
        await boss.send_file("@news", [m.media for m in old_album])
    fresh = await boss.get_messages("@room", ids=photo_id)
    assert fresh.photo.file_reference != old.photo.file_reference
    assert await boss.download_media(fresh, file=bytes) == PNG
    await boss.send_file("@news", fresh.media)
    await boss.send_file("@news", [m.media for m in await boss.get_messages("@room",
                                                                           ids=album)])
    sim_world.configure(file_reference_lifetime=0)             # never expires
    sim_world.advance_clock(10 ** 6)
    assert await boss.download_media(fresh, file=bytes) == PNG


async def test_budget_turns_into_flood_wait_then_lets_through(room, sim_world, sim_client):
    # Telethon itself refuses a request type for the rest of a FloodWait longer than 3 s
    # (in real time), so the budget here refills one token per 2 s.
    folders, _, _ = room
    sim_world.freeze_clock()
    sim_world.set_rate_limit("send_chat", 3, 0.5)
    user = await sim_client(folders["user"], flood_sleep_threshold=0)
    for number in range(3):
        await user.send_message("@room", f"burst {number}")
    with pytest.raises(errors.FloodWaitError) as waited:
        await user.send_message("@room", "one too many")
    assert waited.value.seconds == 2                           # one token at 0.5/s
    sim_world.advance_clock(1)
    with pytest.raises(errors.FloodWaitError) as waited:
        await user.send_message("@room", "still too early")
    assert waited.value.seconds == 1
    sim_world.advance_clock(1)
    await user.send_message("@room", "let through")
    sim_world.set_account("user", rate_limits=False)           # per account
    for number in range(5):
        await user.send_message("@room", f"unlimited {number}")


async def test_default_budgets_and_limited_account(room, sim_world, sim_client):
    folders, _, _ = room
    assert sim_world.settings()["rate_limits"] == 1
    sim_world.freeze_clock()
    user = await sim_client(folders["user"], flood_sleep_threshold=0)
    burst, rate = telegram_sim.DEFAULT_RATE_LIMITS["send_chat"]
    for number in range(burst):
        await user.send_message("@room", f"{number}")
    with pytest.raises(errors.FloodWaitError) as waited:
        await user.send_message("@room", "over the default budget")
    assert waited.value.seconds == round(1 / rate)
    sim_world.advance_clock(waited.value.seconds)
    await user.send_message("@room", "after the wait")
    sim_world.set_account("user", limited=True)
    with pytest.raises(errors.PeerFloodError):
        await user.send_message("@room", "limited")
    assert [m.id async for m in user.iter_messages("@room", limit=1)]    # reads still work


async def test_topic_pager_walks_250_topics_by_activity(room, sim_world, sim_client):
    folders, chat, first_topic = room
    sim_world.configure(rate_limits=False)                     # 250 topics made at once
    sim_world.freeze_clock()                                   # many equal dates: ties
    topics = [first_topic] + [sim_world.create_topic(chat, f"topic {n}")
                              for n in range(249)]
    chooser = random.Random(11)
    for _ in range(400):
        sim_world.post(chat, "activity", topic=chooser.choice(topics + [1]))
        if chooser.random() < 0.3:
            sim_world.advance_clock(chooser.randint(1, 5))
    newest = {}
    for message in sim_world.messages(chat):
        topic = telegram_sim.GENERAL_TOPIC_ID
        if message.reply_to and message.reply_to.forum_topic:
            topic = message.reply_to.reply_to_top_id or message.reply_to.reply_to_msg_id
        if isinstance(message.action, types.MessageActionTopicCreate):
            topic = message.id
        newest[topic] = max(newest.get(topic, 0), message.id)
    expected = sorted(newest, key=lambda t: newest[t], reverse=True)

    user = await sim_client(folders["user"])
    seen, offset_date, offset_id, offset_topic = [], None, 0, 0
    while True:
        page = await user(functions.messages.GetForumTopicsRequest(
            peer="@room", offset_date=offset_date, offset_id=offset_id,
            offset_topic=offset_topic, limit=40))
        if not page.topics:
            break
        assert page.count == 251 and not page.order_by_create_date
        seen += [t.id for t in page.topics]
        last = page.topics[-1]
        top = next(m for m in page.messages if m.id == last.top_message)
        offset_date, offset_id, offset_topic = top.date, last.top_message, last.id
    assert seen == expected                                    # none skipped or repeated


async def test_create_close_and_delete_topics(room, sim_world, sim_client):
    folders, chat, topic = room
    user = await sim_client(folders["user"])
    mod = await sim_client(folders["mod"])
    updates = await user(functions.messages.CreateForumTopicRequest(peer="@room",
                                                                    title="Mine"))
    service = next(u.message for u in updates.updates
                   if isinstance(u, types.UpdateNewChannelMessage))
    assert isinstance(service.action, types.MessageActionTopicCreate)
    mine = service.id
    await user.send_message("@room", "in my topic", reply_to=mine)
    with pytest.raises(errors.ChatAdminRequiredError):         # not the user's topic
        await user(functions.messages.EditForumTopicRequest(peer="@room", topic_id=topic,
                                                            closed=True))
    await mod(functions.messages.EditForumTopicRequest(peer="@room", topic_id=topic,
                                                       closed=True))
    with pytest.raises(errors.BadRequestError, match="TOPIC_CLOSED"):
        await user.send_message("@room", "closed", reply_to=topic)
    listed = await user(functions.messages.GetForumTopicsByIDRequest(peer="@room",
                                                                     topics=[topic]))
    assert listed.topics[0].closed
    sim_world.set_topic(chat, topic, closed=False)
    await user.send_message("@room", "open again", reply_to=topic)
    await user(functions.messages.DeleteTopicHistoryRequest(peer="@room", top_msg_id=mine))
    assert mine not in [t["topic_id"] for t in sim_world.topics(chat)]
    assert not [m for m in sim_world.messages(chat) if m.id >= mine
                and m.reply_to and m.reply_to.reply_to_msg_id == mine]
    with pytest.raises(errors.ChatAdminRequiredError):
        await user(functions.messages.DeleteTopicHistoryRequest(peer="@room",
                                                                top_msg_id=topic))


async def test_edit_and_delete_rights(room, sim_world, sim_client):
    folders, chat, _ = room
    user = await sim_client(folders["user"])
    mod = await sim_client(folders["mod"])
    own = await user.send_message("@room", "typo")
    theirs = await mod.send_message("@room", "the admin's")
    edited = await user.edit_message("@room", own.id, "fixed")
    assert edited.text == "fixed" and edited.edit_date
    with pytest.raises(errors.MessageNotModifiedError):
        await user.edit_message("@room", own.id, "fixed")
    with pytest.raises(errors.MessageAuthorRequiredError):
        await user.edit_message("@room", theirs.id, "not mine")
    with pytest.raises(errors.MessageIdInvalidError):
        await user.edit_message("@room", 10_000, "nothing there")
    with pytest.raises(errors.MediaCaptionTooLongError):
        await user.edit_message("@room", (await user.send_file(
            "@room", PDF, file_name="a.pdf")).id, "x" * 1025)
    with pytest.raises(errors.MessageTooLongError):
        await user.send_message("@room", "x" * 4097)
    with pytest.raises(errors.MessageDeleteForbiddenError):
        await user.delete_messages("@room", [theirs.id])
    await user.delete_messages("@room", [own.id])
    await mod.delete_messages("@room", [theirs.id])            # delete_messages right
    ids = [m.id for m in sim_world.messages(chat)]
    assert own.id not in ids and theirs.id not in ids
    again = await user.send_message("@room", "new")
    assert again.id > theirs.id                                # ids are never reused
    sim_world.advance_clock(telegram_sim.EDIT_TIME_LIMIT + 1)
    with pytest.raises(errors.MessageEditTimeExpiredError):
        await user.edit_message("@room", again.id, "too late")


async def test_forward_cap_and_random_id_memory(room, sim_world, sim_client):
    folders, chat, _ = room
    sim_world.configure(rate_limits=False)
    boss = await sim_client(folders["boss"])
    with pytest.raises(errors.BadRequestError, match="MESSAGE_IDS_TOO_MUCH"):
        await boss(functions.messages.ForwardMessagesRequest(
            from_peer="@room", id=list(range(1, 102)), to_peer="@news",
            random_id=list(range(1, 102))))
    sim_world.freeze_clock()
    sim_world.configure(random_id_memory=3600)
    send = functions.messages.SendMessageRequest(peer="@room", message="once",
                                                 random_id=424242)
    await boss(send)
    await boss(send)                                           # remembered: not sent again
    assert [m.message for m in sim_world.messages(chat)].count("once") == 1
    sim_world.advance_clock(3601)
    await boss(send)                                           # forgotten: sent again
    assert [m.message for m in sim_world.messages(chat)].count("once") == 2


async def test_basic_group_ids_are_per_account(room, png, sim_world, sim_client):
    folders, _, _ = room
    family = sim_world.create_channel("Family", kind="group", owner="boss",
                                      members=["user"])
    for number in range(3):                                    # only boss and user get these
        sim_world.post(family, f"family {number}")
    work = sim_world.create_channel("Work", kind="group", owner="boss",
                                    members=["mod", "user"], default_banned=["send_media"])
    assert sim_world.peer_id(work) == -work
    user = await sim_client(folders["user"])
    mod = await sim_client(folders["mod"])
    heard = []

    @mod.on(events.NewMessage(chats=[-work]))
    async def on_message(event):
        heard.append((event.message.id, event.message.text))

    await mod.get_dialogs()
    dialogs = {d.name: d for d in await user.get_dialogs()}
    entity = dialogs["Work"].entity
    assert isinstance(entity, types.Chat) and not isinstance(entity, types.Channel)
    assert entity.default_banned_rights.send_media
    sent = await user.send_message(entity, "hello work")
    assert sent.id == 6          # user's 6th: Family's creation and 3 posts, Work's creation
    await wait_until_async(lambda: heard, what="the group message's event")
    assert heard == [(2, "hello work")]                        # mod's 2nd: after creation
    assert [m.id for m in await mod.get_messages(-work, limit=10)] == [2, 1]
    assert [m.id async for m in user.iter_messages(-work)] == [6, 5]
    family_texts = [m.text async for m in user.iter_messages(dialogs["Family"].entity,
                                                             reverse=True)]
    assert family_texts[1:] == ["family 0", "family 1", "family 2"]
    by_id = await user.get_messages(-work, ids=6)
    assert by_id.text == "hello work" and isinstance(by_id.peer_id, types.PeerChat)
    reply = await mod.send_message(-work, "welcome", reply_to=2)
    assert reply.id == 3 and reply.reply_to.reply_to_msg_id == 2
    mine = (await user.get_messages(-work, limit=1))[0]
    assert (mine.id, mine.reply_to.reply_to_msg_id) == (7, 6)  # the same reply, user's ids
    with pytest.raises(errors.ChatSendMediaForbiddenError):
        await user.send_file(entity, png)
    boss_view = [m.id for m in sim_world.messages(work, viewer="boss")]
    assert boss_view == [5, 6, 7]                              # boss's own numbering


@pytest.mark.parametrize("right, attributes, error", [
    ("send_videos", [types.DocumentAttributeVideo(duration=1, w=2, h=2)],
     errors.ChatSendVideosForbiddenError),
    ("send_roundvideos", [types.DocumentAttributeVideo(duration=1, w=2, h=2,
                                                       round_message=True)],
     "CHAT_SEND_ROUNDVIDEOS_FORBIDDEN"),
    ("send_voices", [types.DocumentAttributeAudio(duration=1, voice=True)],
     errors.ChatSendVoicesForbiddenError),
    ("send_audios", [types.DocumentAttributeAudio(duration=1)],
     "CHAT_SEND_AUDIOS_FORBIDDEN"),
    ("send_gifs", [types.DocumentAttributeAnimated()], errors.ChatSendGifsForbiddenError),
    ("send_stickers", [types.DocumentAttributeSticker(
        alt="x", stickerset=types.InputStickerSetEmpty())],
     errors.ChatSendStickersForbiddenError),
])
async def test_each_kind_of_media_has_its_right(room, sim_world, sim_client, right,
                                                attributes, error):
    folders, chat, _ = room
    sim_world.restrict("user", chat, [right])
    user = await sim_client(folders["user"])
    await user.send_file("@room", PDF, file_name="a.pdf")          # other kinds still go
    if isinstance(error, str):                                  # no class in Telethon 1.45
        with pytest.raises(errors.ForbiddenError, match=error):
            await user.send_file("@room", PDF, attributes=attributes, force_document=True)
    else:
        with pytest.raises(error):
            await user.send_file("@room", PDF, attributes=attributes, force_document=True)
