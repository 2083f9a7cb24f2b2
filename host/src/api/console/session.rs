//! Console sessions: the admin token buys one at login; a random id in an
//! HttpOnly, SameSite=Strict cookie names it, and each carries its own CSRF
//! token for the forms it is shown. Kept in memory: a restart signs every
//! operator out, which costs a login and keeps no secret on disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "mirrorhost_session";

/// A session ends this long after login, used or not.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; a login past it forgets the oldest, so a script
/// that logs in in a loop cannot grow the map without end.
const MAX_SESSIONS: usize = 1024;

/// What a signed-in request knows about its session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// Put in every form the session is shown, checked on every POST.
    pub csrf: String,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

#[derive(Debug)]
struct Entry {
    csrf: String,
    started: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Entry>>);

impl Sessions {
    /// A new session; its id goes in the cookie.
    pub fn start(&self) -> Session {
        let session = Session {
            id: random_token(),
            csrf: random_token(),
        };
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, e| now.duration_since(e.started) < LIFETIME);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.started)
                .map(|(id, _)| id.clone())
        {
            map.remove(&oldest);
        }
        let entry = Entry {
            csrf: session.csrf.clone(),
            started: now,
        };
        map.insert(session.id.clone(), entry);
        session
    }

    /// The live session the cookie `id` names.
    pub fn find(&self, id: &str) -> Option<Session> {
        let map = self.lock();
        let entry = map.get(id)?;
        (entry.started.elapsed() < LIFETIME).then(|| Session {
            id: id.to_string(),
            csrf: entry.csrf.clone(),
        })
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 32 random bytes, hex (as the admin token is made): a session id or a
/// CSRF token.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The session id from a `Cookie` header, if it carries ours.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new session: unreadable by script, never sent by
/// another site's request, and only over TLS when the listener speaks it.
pub fn set_cookie(session: &Session, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session.id,
        LIFETIME.as_secs()
    )
}

/// `Set-Cookie` that removes the cookie at logout.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_until_it_ends() {
        let sessions = Sessions::default();
        let s = sessions.start();
        assert_eq!(sessions.find(&s.id).unwrap().csrf, s.csrf);
        assert!(s.csrf_matches(&s.csrf));
        assert!(!s.csrf_matches(&sessions.start().csrf));
        sessions.end(&s.id);
        assert!(sessions.find(&s.id).is_none());
    }

    #[test]
    fn logins_past_the_cap_forget_the_oldest() {
        let sessions = Sessions::default();
        let first = sessions.start();
        for _ in 0..MAX_SESSIONS {
            sessions.start();
        }
        assert!(sessions.find(&first.id).is_none());
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let header = "theme=dark; mirrorhost_session=abc; other=1";
        assert_eq!(from_cookie_header(header), Some("abc"));
        assert_eq!(from_cookie_header("mirrorhost_sessionx=1"), None);
        let s = Session {
            id: "abc".into(),
            csrf: String::new(),
        };
        let cookie = set_cookie(&s, true);
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!set_cookie(&s, false).contains("Secure"));
    }
}
