//! One grade per fruit from the outcomes of its views (0x01 with `fruit_id`).
//!
//! A view is judged when its image was read and a pear was found in it. The
//! grade is the defect class seen with the highest confidence over the judged
//! views, or 0 (normal) when every judged view is normal: one view that shows
//! a defect is enough to reject the fruit, since the other views may simply
//! show the other side. Fewer judged views than `fruit.min_views_judged`
//! leaves the fruit ungraded, so the sorter sends it to the recheck lane.

use crate::inference::Outcome;
use pear_protocol::{ErrorCode, Fruit};
use serde_json::Value;

/// Why a view was not judged, in the order the message lists them.
const REASONS: [&str; 5] = ["no pear found", "unreadable", "refused", "deadline missed", "failed or cancelled"];

/// The reason index of a view that was not judged, and its error code.
fn not_judged(outcome: &Outcome) -> Option<(usize, ErrorCode)> {
    Some(match outcome {
        Outcome::Done(ins) if ins.class.is_some() => return None,
        Outcome::Done(_) => (0, ErrorCode::ResourceNotFound),
        Outcome::Unreadable(_) => (1, ErrorCode::ResourceNotFound),
        Outcome::Refused(_) => (2, ErrorCode::InvalidMessage),
        Outcome::DeadlineMissed => (3, ErrorCode::Timeout),
        Outcome::Failed(_) | Outcome::Cancelled | Outcome::TimedOut | Outcome::Busy(_) | Outcome::ShuttingDown => (4, ErrorCode::Timeout),
    })
}

/// Grades one fruit from its views (file name and outcome, in request order).
pub fn grade(fruit_id: Value, views: &[(&str, &Outcome)], min_views_judged: usize) -> Fruit {
    let mut best: Option<(&str, usize, Option<f32>)> = None; // (file, class, confidence)
    let mut judged = 0;
    let mut missing = [0usize; REASONS.len()];
    // Time-related failures (4) say "try again"; otherwise the images are the problem (2), or the names (1).
    let mut code = ErrorCode::InvalidMessage;
    for (file, outcome) in views {
        match (not_judged(outcome), outcome) {
            (None, Outcome::Done(ins)) => {
                judged += 1;
                let class = ins.class.unwrap_or(0);
                let rank = |class: usize, conf: Option<f32>| (class != 0, conf.unwrap_or(0.0));
                // A defect beats normal; among equals, the more confident view; the first on a tie.
                if best.is_none_or(|(_, c, bc)| rank(class, ins.confidence) > rank(c, bc)) {
                    best = Some((file, class, ins.confidence));
                }
            }
            (Some((reason, c)), _) => {
                missing[reason] += 1;
                code = match (code, c) {
                    (_, ErrorCode::Timeout) | (ErrorCode::Timeout, _) => ErrorCode::Timeout,
                    (_, ErrorCode::ResourceNotFound) | (ErrorCode::ResourceNotFound, _) => ErrorCode::ResourceNotFound,
                    (k, _) => k,
                };
            }
            (None, _) => {}
        }
    }
    let why = || {
        let parts: Vec<String> = REASONS.iter().zip(missing).filter(|(_, n)| *n > 0).map(|(r, n)| format!("{n} {r}")).collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let ungraded = |message: String| Fruit {
        fruit_id: fruit_id.clone(),
        result: None,
        error_code: code,
        views_judged: judged,
        decisive_view: None,
        confidence: None,
        message: Some(message),
    };
    match best {
        None => ungraded(format!("no view judged{}", why())),
        Some(_) if judged < min_views_judged => {
            ungraded(format!("{judged} of {} views judged, fruit.min_views_judged is {min_views_judged}{}", views.len(), why()))
        }
        Some((file, class, confidence)) => Fruit {
            fruit_id,
            result: Some(class as i64),
            error_code: ErrorCode::NoError,
            views_judged: judged,
            decisive_view: Some(file.to_string()),
            confidence,
            message: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pear_model::pipeline::Inspection;
    use serde_json::json;

    fn seen(class: Option<usize>, confidence: f32) -> Outcome {
        Outcome::Done(Inspection { class, label: None, confidence: class.map(|_| confidence), bbox: None, detection_score: None })
    }

    fn fruit(views: &[(&str, Outcome)], min: usize) -> Fruit {
        let refs: Vec<(&str, &Outcome)> = views.iter().map(|(f, o)| (*f, o)).collect();
        grade(json!(7), &refs, min)
    }

    #[test]
    fn a_defect_in_one_view_grades_the_fruit() {
        let f = fruit(&[("a", seen(Some(0), 0.99)), ("b", seen(Some(3), 0.6)), ("c", seen(Some(5), 0.8)), ("d", seen(None, 0.0))], 1);
        assert_eq!((f.result, f.error_code, f.views_judged), (Some(5), ErrorCode::NoError, 3));
        assert_eq!((f.decisive_view.as_deref(), f.confidence), (Some("c"), Some(0.8)));
        assert_eq!(f.fruit_id, json!(7));
    }

    #[test]
    fn all_normal_is_normal_from_the_surest_view() {
        let f = fruit(&[("a", seen(Some(0), 0.7)), ("b", seen(Some(0), 0.9))], 2);
        assert_eq!((f.result, f.decisive_view.as_deref(), f.views_judged), (Some(0), Some("b"), 2));
    }

    #[test]
    fn no_judged_view_says_why() {
        let f = fruit(&[("a", seen(None, 0.0)), ("b", Outcome::Unreadable("x".into()))], 1);
        assert_eq!((f.result, f.error_code, f.views_judged), (None, ErrorCode::ResourceNotFound, 0));
        assert_eq!(f.message.as_deref(), Some("no view judged (1 no pear found, 1 unreadable)"));
        let f = fruit(&[("a", seen(None, 0.0)), ("b", Outcome::DeadlineMissed)], 1);
        assert_eq!(f.error_code, ErrorCode::Timeout, "a late view might have been judged: 4, not 2");
        let f = fruit(&[("a", Outcome::Refused("x".into()))], 1);
        assert_eq!(f.error_code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn too_few_judged_views_leave_the_fruit_ungraded() {
        let f = fruit(&[("a", seen(Some(2), 0.9)), ("b", Outcome::DeadlineMissed), ("c", Outcome::DeadlineMissed)], 2);
        assert_eq!((f.result, f.error_code, f.views_judged), (None, ErrorCode::Timeout, 1));
        assert_eq!(f.message.as_deref(), Some("1 of 3 views judged, fruit.min_views_judged is 2 (2 deadline missed)"));
    }
}
