//! Scheduler policy on fake sequences: no model, microseconds.

use super::*;

fn sched(blocks: usize, block_size: usize, max_running: usize, budget: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig { max_running, token_budget: budget, max_waiting: 4, max_seq_len: 64 },
        KvCacheManager::new(blocks, block_size),
    )
}

fn req(id: u32, len: usize) -> Request {
    Request { id: SeqId(id), prompt: (0..len as u32).map(|t| t + 100 * id).collect(), prefix_root: None }
}

/// Runs one step as an engine would: every sampled sequence gets token 7.
fn step(s: &mut Scheduler) -> StepPlan {
    let plan = s.schedule();
    let outcomes: Vec<_> = plan.scheduled.iter().filter(|x| x.sample).map(|x| (x.id, Outcome::Continue(7))).collect();
    s.update(&plan, &outcomes);
    plan
}

/// Runs one step in which `done` finishes and everyone else gets token 7.
fn step_finishing(s: &mut Scheduler, done: SeqId) -> StepPlan {
    let plan = s.schedule();
    let outcomes: Vec<_> = plan
        .scheduled
        .iter()
        .filter(|x| x.sample)
        .map(|x| (x.id, if x.id == done { Outcome::Finished } else { Outcome::Continue(7) }))
        .collect();
    s.update(&plan, &outcomes);
    plan
}

#[test]
fn update_publishes_a_finishing_sequence_then_frees_it() {
    let mut s = sched(8, 4, 4, 64);
    s.add(req(1, 9)).unwrap();
    step_finishing(&mut s, SeqId(1));
    assert!(s.is_idle());
    assert_eq!(s.kv().pool().num_used(), 0, "its blocks are free");
    // Its two full blocks stay in the prefix cache for the next turn.
    s.add(Request { id: SeqId(2), prompt: req(1, 9).prompt.into_iter().chain([5]).collect(), prefix_root: None }).unwrap();
    let p = step(&mut s);
    assert_eq!(p.scheduled[0].start, 8);
}

#[test]
fn outcomes_for_unknown_or_aborted_sequences_are_ignored() {
    let mut s = sched(8, 4, 4, 64);
    s.add(req(1, 3)).unwrap();
    let plan = s.schedule();
    s.abort(SeqId(1));
    s.update(&plan, &[(SeqId(1), Outcome::Continue(7)), (SeqId(9), Outcome::Finished)]);
    assert!(s.is_idle());
    assert_eq!(s.kv().pool().num_used(), 0);
}

#[test]
fn prompts_are_chunked_under_the_budget_and_decodes_go_first() {
    let mut s = sched(16, 4, 4, 8);
    s.add(req(1, 3)).unwrap();
    let p = step(&mut s);
    assert_eq!(p.scheduled, vec![Scheduled { id: SeqId(1), start: 0, len: 3, sample: true }]);
    s.add(req(2, 12)).unwrap();
    let p = step(&mut s);
    // Seq 1 decodes one token; seq 2 gets the remaining 7 of the budget.
    assert_eq!(p.scheduled[0], Scheduled { id: SeqId(1), start: 3, len: 1, sample: true });
    assert_eq!(p.scheduled[1], Scheduled { id: SeqId(2), start: 0, len: 7, sample: false });
    let p = step(&mut s);
    assert_eq!(p.scheduled[1], Scheduled { id: SeqId(2), start: 7, len: 5, sample: true });
    assert_eq!(p.num_tokens(), 6);
}

#[test]
fn admission_waits_for_room_and_respects_the_running_limit() {
    let mut s = sched(4, 4, 1, 64);
    s.add(req(1, 5)).unwrap();
    s.add(req(2, 5)).unwrap();
    step(&mut s);
    assert_eq!((s.num_running(), s.num_waiting()), (1, 1));
    s.abort(SeqId(1));
    step(&mut s);
    assert_eq!((s.num_running(), s.num_waiting()), (1, 0));
}

#[test]
fn refuses_what_can_never_run_and_a_full_queue() {
    let mut s = sched(2, 4, 1, 64);
    assert!(matches!(s.add(req(1, 64)), Err(AddError::PromptTooLong { .. })));
    assert!(matches!(s.add(req(1, 8)), Err(AddError::ExceedsKvPool { .. })));
    for id in 0..4 {
        s.add(req(id, 2)).unwrap();
    }
    assert!(matches!(s.add(req(9, 2)), Err(AddError::Duplicate(9) | AddError::QueueFull { .. })));
    assert!(matches!(s.add(req(10, 2)), Err(AddError::QueueFull { waiting: 4 })));
}

#[test]
fn decode_growth_preempts_the_youngest_and_it_resumes_later() {
    // 3 blocks of 2: two sequences of 2 tokens, then they grow.
    let mut s = sched(3, 2, 4, 64);
    s.add(req(1, 2)).unwrap();
    s.add(req(2, 1)).unwrap();
    step(&mut s); // both prefilled, each sampled one token
    assert_eq!(s.kv().pool().num_used(), 2);
    step(&mut s); // seq 1 reaches 3 positions → takes the last block
    let p = step(&mut s); // seq 2 reaches a 3rd position → 2nd block, none free
    assert_eq!(p.preempted, vec![SeqId(2)]);
    assert_eq!(s.num_waiting(), 1);
    assert_eq!(s.preemptions_of(SeqId(2)), 1);
    // Seq 2 kept its sampled tokens and is recomputed once seq 1 ends.
    let tokens_before = s.tokens(SeqId(2)).unwrap().to_vec();
    s.abort(SeqId(1));
    let p = step(&mut s);
    assert_eq!(p.scheduled[0].id, SeqId(2));
    // Its full first block comes back from the prefix cache.
    assert_eq!((p.scheduled[0].start, p.scheduled[0].len), (2, tokens_before.len() - 2));
    assert!(p.scheduled[0].sample);
}

#[test]
fn a_lone_sequence_that_outgrows_the_pool_is_reported() {
    let mut s = sched(1, 2, 4, 64);
    s.add(req(1, 1)).unwrap();
    step(&mut s);
    step(&mut s);
    let p = step(&mut s); // third position needs a second block
    assert_eq!(p.out_of_memory, vec![SeqId(1)]);
    assert!(s.is_idle());
    assert_eq!(s.kv().pool().num_used(), 0);
}

#[test]
fn shared_prompt_prefix_is_computed_once() {
    let mut s = sched(16, 4, 4, 64);
    let system: Vec<TokenId> = (0..10).collect();
    let with =
        |id: u32, tail: TokenId| Request { id: SeqId(id), prompt: system.iter().copied().chain([tail]).collect(), prefix_root: None };
    s.add(with(1, 50)).unwrap();
    step(&mut s);
    s.abort(SeqId(1));
    s.add(with(2, 60)).unwrap();
    s.add(with(3, 70)).unwrap();
    let p = step(&mut s);
    // Two full blocks (8 tokens) of the system prompt come from the cache.
    assert!(p.scheduled.iter().all(|x| x.start == 8 && x.len == 3));
    let st = s.kv().stats();
    assert_eq!((st.queried_tokens, st.hit_tokens), (33, 16));
}

#[test]
fn abort_frees_blocks_everywhere() {
    let mut s = sched(8, 4, 1, 64);
    s.add(req(1, 6)).unwrap();
    s.add(req(2, 6)).unwrap();
    step(&mut s);
    assert!(s.abort(SeqId(1)));
    assert!(s.abort(SeqId(2)));
    assert!(!s.abort(SeqId(3)));
    assert!(s.is_idle());
    assert_eq!(s.kv().pool().num_used(), 0);
}
