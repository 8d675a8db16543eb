use super::*;

fn msg(seq: u64, prev: &str, digest: &str) -> Message {
    let mut m = Message::new(format!("0-{seq}"), b"x".to_vec());
    m.sequence = seq;
    m.record = Some(LogRecord {
        bytes: vec![seq as u8],
        checksum: 0,
        digest: digest.into(),
        prev_digest: prev.into(),
    });
    m
}

fn seqs(v: &[(&Message, &LogRecord)]) -> Vec<u64> {
    v.iter().map(|(m, _)| m.sequence).collect()
}

#[test]
fn only_what_the_replica_lacks_is_sent_when_its_digest_is_ours() {
    let msgs = vec![msg(5, "a", "b"), msg(6, "b", "c"), msg(7, "c", "d")];
    let recs = records_of(&msgs).expect("records");
    assert_eq!(seqs(&unsent(&msgs, &recs, 5, "a")), vec![5, 6, 7]);
    assert_eq!(seqs(&unsent(&msgs, &recs, 6, "b")), vec![6, 7]);
    assert_eq!(seqs(&unsent(&msgs, &recs, 8, "d")), Vec::<u64>::new());
    assert_eq!(seqs(&unsent(&msgs, &recs, 3, "z")), vec![5, 6, 7], "behind: the replica finds the gap");
    assert_eq!(seqs(&unsent(&msgs, &recs, 6, "X")), vec![5, 6, 7], "another history: the replica compares");
    assert_eq!(seqs(&unsent(&msgs, &recs, 9, "q")), vec![5, 6, 7], "ahead: the replica compares");
}

#[test]
fn a_message_without_its_record_halts() {
    let err = records_of(&[Message::new("0-1", b"x".to_vec())]).expect_err("no record");
    assert!(err.is_halt() && err.reason().starts_with("no_record:"), "{err:?}");
}

#[test]
fn replies_are_classified_retry_or_halt_never_reject() {
    let resp = |status: u16, body: &str| Response { status, headers: vec![], body: body.as_bytes().to_vec() };
    assert!(classify(resp(200, "{}")).is_ok());
    assert!(classify(resp(503, "")).expect_err("503").is_retry());
    let e = classify(resp(422, r#"{"error":{"code":"checksum_mismatch","message":"record 3"}}"#))
        .expect_err("422");
    assert!(e.is_halt() && e.reason().starts_with("checksum_mismatch: HTTP 422"), "{e:?}");
    assert!(classify(resp(404, "nope")).expect_err("404").is_halt());
}

#[test]
fn big_batches_go_in_chunks_in_order() {
    let big = |seq: u64| {
        let mut m = msg(seq, "a", "b");
        m.record.as_mut().expect("record").bytes = vec![0; 900 * 1024];
        m
    };
    let msgs: Vec<Message> = (0..5).map(big).collect();
    let recs = records_of(&msgs).expect("records");
    let all: Vec<(&Message, &LogRecord)> = msgs.iter().zip(recs.iter().copied()).collect();
    let c = chunks(&all);
    assert!(c.len() >= 3, "{}", c.len());
    assert_eq!(c.iter().flat_map(|c| seqs(c)).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn url_secrets_stay_out_of_errors() {
    use wharf_sdk::testing::Harness;
    let err = Harness::<Replica>::init(&[("url", "ftp://u:s3cr3t@h/?k=v4lue")]).expect_err("not http");
    assert!(err.contains("ftp://***@h/?k=***") && !err.contains("s3cr3t") && !err.contains("v4lue"), "{err}");

    let mut p = Harness::<Replica>::init(&[("url", "http://u:s3cr3t@127.0.0.1:1")]).expect("init");
    let outcomes = p.deliver(vec![msg(1, "", "a")]);
    let reason = outcomes[0].reason().unwrap_or_default();
    assert!(outcomes[0].is_retry() && reason.contains("***@127.0.0.1:1"), "{outcomes:?}");
    assert!(!reason.contains("s3cr3t"), "{reason}");
}
