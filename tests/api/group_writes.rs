//! Group commit (`actors::chat::{SendReader, TurnWriter, FinalWriter}`):
//! reads and writes of many chats sent together each land on (or read) their
//! own rows, and a row the database refuses fails only its own write.

use futures::future::join_all;
use switchboard::{
    actors::chat::{FinalError, FinalWriter, SendReader, TurnWriter},
    store::{
        self,
        chats::SendRead,
        messages::{NewTurn, NewUserMessage, Outcome},
    },
};
use uuid::Uuid;

use crate::helpers::spawn_app_with;

/// A `streaming` answer in `chat`, as a chat actor opens one.
async fn streaming_answer(db: &sqlx::PgPool, chat: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "with next as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, content, status)
         select $2, $1, next.last_seq, 'assistant', 'partial', 'streaming' from next",
    )
    .bind(chat)
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    id
}

fn outcome(content: &str, input_tokens: i32) -> Outcome {
    Outcome {
        status: "complete",
        provider: "simulated".into(),
        model: "sim-1".into(),
        content: content.into(),
        finish_reason: "stop".into(),
        input_tokens,
        output_tokens: 3,
        cost_micros: 42,
    }
}

#[tokio::test]
async fn answers_of_many_chats_end_together_and_a_refused_row_fails_alone() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let mut answers = Vec::new();
    for user in [&alice, &bob] {
        for _ in 0..3 {
            let chat = app.create_chat(&user.access_token).await;
            for _ in 0..4 {
                answers.push((chat, streaming_answer(&app.db, chat).await));
            }
        }
    }
    // A negative token count breaks the row's check constraint: that write is
    // refused, and whichever batch held it is written again row by row.
    let refused = answers[5].1;
    let gone = Uuid::now_v7();
    let writer = FinalWriter::start(app.db.clone());
    let mut writes: Vec<(Uuid, Outcome)> = answers
        .iter()
        .map(|&(_, id)| {
            let tokens = if id == refused { -1 } else { 5 };
            (id, outcome(&format!("the answer {id}"), tokens))
        })
        .collect();
    writes.push((gone, outcome("nobody's", 5)));
    let results = join_all(writes.iter().map(|(id, o)| writer.finalize(*id, o.clone()))).await;

    for ((id, _), result) in writes.iter().zip(&results) {
        match result {
            Ok(f) => {
                assert_ne!(*id, refused);
                assert_ne!(*id, gone);
                assert_eq!(f.message.id, *id, "each write answers its own row");
                assert_eq!(f.message.content, format!("the answer {id}"));
                assert_eq!(f.message.status, "complete");
                assert_eq!(f.message.cost_micros, Some(42));
                assert_eq!(
                    f.next_awaiting, None,
                    "nothing awaits an answer in these chats"
                );
            }
            Err(FinalError::Refused(_)) => assert_eq!(*id, refused),
            Err(FinalError::Gone) => assert_eq!(*id, gone),
            Err(e) => panic!("{id}: {e:?}"),
        }
    }
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        answers.len() - 1
    );
    let stored: Vec<(Uuid, Uuid, String, String)> = sqlx::query_as(
        "select id, chat_id, status, content from messages where id = any($1) order by id",
    )
    .bind(answers.iter().map(|a| a.1).collect::<Vec<_>>())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(stored.len(), answers.len());
    for (id, chat, status, content) in stored {
        assert!(answers.contains(&(chat, id)), "no answer moved chats");
        if id == refused {
            assert_eq!(
                (status.as_str(), content.as_str()),
                ("streaming", "partial")
            );
        } else {
            assert_eq!(status, "complete");
            assert_eq!(content, format!("the answer {id}"));
        }
    }

    // Ending an answer twice: the second write finds nothing streaming.
    let again = writer.finalize(answers[0].1, outcome("late", 5)).await;
    assert!(matches!(again, Err(FinalError::Gone)), "{again:?}");
}

fn turn(chat: Uuid, author: Uuid, client_msg_id: &str, read_at: i64) -> NewTurn {
    NewTurn {
        message: NewUserMessage {
            chat_id: chat,
            author_id: author,
            client_msg_id: client_msg_id.into(),
            content: format!("hello from {client_msg_id}"),
        },
        read_at,
        fence: None,
        provider: "simulated".into(),
        model: "sim-1".into(),
        prompt_tokens: 9,
    }
}

#[tokio::test]
async fn turns_of_many_chats_open_together_and_a_refused_or_stale_one_alone() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let mut turns = Vec::new();
    for (user, name) in [(&alice, "alice"), (&bob, "bob")] {
        for i in 0..4 {
            let chat = app.create_chat(&user.access_token).await;
            turns.push(turn(chat, user.id, &format!("{name}-{i}"), 0));
        }
    }
    // A chat that moved on since its sender read it: nothing of the turn is written.
    turns[1].read_at = 5;
    // A client_msg_id the chat already holds: refused, and only that turn.
    let dup_chat = turns[6].message.chat_id;
    sqlx::query(
        "with next as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status)
         select $2, $1, next.last_seq, 'user', $3, 'bob-2', 'first', 'complete' from next",
    )
    .bind(dup_chat)
    .bind(Uuid::now_v7())
    .bind(bob.id)
    .execute(&app.db)
    .await
    .unwrap();
    turns[6].read_at = 1;

    let writer = TurnWriter::start(app.db.clone(), "test-node".into());
    let results = join_all(turns.iter().map(|t| writer.open(t.clone()))).await;
    for (i, (t, result)) in turns.iter().zip(results).enumerate() {
        match (i, result) {
            (1, Ok(None)) => {}
            (6, Err(e)) => assert!(
                store::is_unique_violation(&e, "messages_chat_id_client_msg_id_key"),
                "{e}"
            ),
            (_, Ok(Some((user, answer)))) => {
                assert_eq!(
                    (user.chat_id, answer.chat_id),
                    (t.message.chat_id, t.message.chat_id)
                );
                assert_eq!((user.seq, answer.seq), (1, 2));
                assert_eq!(user.author_id, Some(t.message.author_id));
                assert_eq!(
                    user.client_msg_id.as_deref(),
                    Some(t.message.client_msg_id.as_str())
                );
                assert_eq!(user.content, t.message.content);
                assert_eq!(answer.reply_to, Some(user.id));
                assert_eq!(answer.status, "streaming");
                assert_eq!(answer.node_id.as_deref(), Some("test-node"));
            }
            (i, other) => panic!("turn {i}: {other:?}"),
        }
    }
    let seqs: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select c.id, c.last_seq, (select count(*) from messages m where m.chat_id = c.id)
         from chats c where c.id = any($1)",
    )
    .bind(turns.iter().map(|t| t.message.chat_id).collect::<Vec<_>>())
    .fetch_all(&app.db)
    .await
    .unwrap();
    for (chat, last_seq, rows) in seqs {
        let i = turns
            .iter()
            .position(|t| t.message.chat_id == chat)
            .unwrap();
        let expected = match i {
            1 => (0, 0),
            6 => (1, 1),
            _ => (2, 2),
        };
        assert_eq!((last_seq, rows), expected, "turn {i}");
    }
}

#[tokio::test]
async fn messages_of_many_chats_are_stored_together_and_a_refused_one_alone() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let mut new = Vec::new();
    for (user, name) in [(&alice, "alice"), (&bob, "bob")] {
        for i in 0..3 {
            let chat = app.create_chat(&user.access_token).await;
            new.push(turn(chat, user.id, &format!("{name}-{i}"), 0).message);
        }
    }
    let writer = TurnWriter::start(app.db.clone(), "test-node".into());
    // The first of each chat lands; sending them all again repeats every
    // client_msg_id, which is refused message by message, not as a batch.
    let first = join_all(new.iter().map(|m| writer.store(m.clone()))).await;
    let again = join_all(new.iter().map(|m| writer.store(m.clone()))).await;
    let gone = NewUserMessage {
        chat_id: Uuid::now_v7(),
        ..new[0].clone()
    };
    let missing = writer.store(gone).await;
    assert!(
        matches!(missing, Err(sqlx::Error::RowNotFound)),
        "{missing:?}"
    );
    for ((m, stored), repeated) in new.iter().zip(first).zip(again) {
        let stored = stored.unwrap();
        assert_eq!((stored.chat_id, stored.seq), (m.chat_id, 1));
        assert_eq!(
            stored.client_msg_id.as_deref(),
            Some(m.client_msg_id.as_str())
        );
        assert_eq!(stored.author_id, Some(m.author_id));
        let e = repeated.unwrap_err();
        assert!(
            store::is_unique_violation(&e, "messages_chat_id_client_msg_id_key"),
            "{e}"
        );
    }
    let awaiting: Vec<(i64, bool)> = sqlx::query_as(
        "select c.last_seq, bool_and(m.awaiting_answer) from chats c join messages m on m.chat_id = c.id
         where c.id = any($1) group by c.id",
    )
    .bind(new.iter().map(|m| m.chat_id).collect::<Vec<_>>())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        awaiting,
        vec![(1, true); new.len()],
        "one message each, awaiting its answer"
    );
}

#[tokio::test]
async fn send_reads_of_many_users_answer_each_its_own_and_a_stranger_nothing() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    let (a_chat, b_chat) = (
        app.create_chat(&alice.access_token).await,
        app.create_chat(&bob.access_token).await,
    );
    let writer = TurnWriter::start(app.db.clone(), "test-node".into());
    let seen = writer
        .store(turn(a_chat, alice.id, "seen", 0).message)
        .await
        .unwrap();
    let read = |user: Uuid, chat: Uuid, id: &str| SendRead {
        user_id: user,
        chat_id: chat,
        client_msg_id: id.into(),
    };
    let reader = SendReader::start(app.db.clone(), 86_400, 50);
    let reads = [
        read(alice.id, a_chat, "seen"),
        read(bob.id, b_chat, "new"),
        read(bob.id, a_chat, "not my chat"),
        read(alice.id, a_chat, "fresh"),
    ];
    let mut got = join_all(reads.iter().map(|r| reader.read(r.clone()))).await;

    let fresh = got.pop().unwrap().unwrap().expect("alice's own chat");
    assert_eq!(
        got.pop().unwrap().unwrap().map(|c| c.workspace_id),
        None,
        "bob is no member of alice's chat"
    );
    let mut b = got.pop().unwrap().unwrap().expect("bob's own chat");
    let mut a = got.pop().unwrap().unwrap().expect("alice's own chat");
    assert_eq!(a.workspace_id, app.workspace_of(&alice).await);
    assert_eq!(b.workspace_id, app.workspace_of(&bob).await);
    assert_eq!(
        (a.resent, fresh.resent, b.resent),
        (Some(seen.id), None, None)
    );
    assert_eq!((a.last_seq, b.last_seq), (1, 0));
    assert!(a.queued, "alice's message awaits its answer");
    assert!(!b.queued);
    assert_eq!(a.history(), vec![("user".to_owned(), seen.content.clone())]);
    assert!(b.history().is_empty());
}
