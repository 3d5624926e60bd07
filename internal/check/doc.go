// Package check runs the Zimmer platform's validation against any
// automation, behind a zimmer-sidecar or not, and reports what the
// platform would make of it.
//
// Run calls the automation's endpoints the way the platform and the
// integration guide do, one call at a time, and turns each call into a
// Result row:
//
//   - health: a GET without a token, classified exactly as the platform
//     classifies it (health.Classify); only "healthy" is listed;
//   - provision in the platform's dialect (ints, null bot_token and
//     demo_tokens), repeated in the guide's (demo_tokens 5) and with
//     numeric-string ids: each must answer exactly 200 with a JSON object;
//   - usage consume in the guide's dialect (units, usage_type) and the
//     older one (tokens_consumed, action): 200 with the four answer fields;
//   - KB status as a POST (the platform's: a JSON object with status,
//     backup_status, error_logs, supports_reset) and as a GET (the guide's
//     states), KB reset with the id in the query and in a JSON body; a 404
//     to the first KB call means the automation has no knowledge base;
//   - every protected endpoint without a token and with a wrong one (401
//     with a JSON detail), a bare GET to each POST-only endpoint (the
//     platform's URL checker accepts 200 or 405), and each URL with its
//     trailing slash toggled.
//
// A redirect on any call is a failure (the platform's client never follows
// one), and so is a call slower than its budget (Budgets). Problems that
// break the platform or what the guide calls required are "fail"; the
// rest are "warn". The automation would be listed when nothing failed.
//
// Run sends real calls: provision creates the test account
// Options.UserAutomationID (default 999999), consume spends its tokens and
// KB reset empties its knowledge base. It sends traffic only to the URLs
// in Options, follows no redirect, uses no proxy from the environment and
// never puts the service token in a Result.
//
// # JSON report
//
// Report encodes as (version 1):
//
//	{
//	  "version": 1,
//	  "listed": true,              // no result failed
//	  "health": "healthy",         // the classifier's verdict, "" if not run
//	  "summary": {"ok": 21, "warn": 1, "fail": 0, "skip": 0},
//	  "user_automation_id": 999999,
//	  "user_id": 999999,
//	  "endpoints": {"health": "http://...", "provision": "...", ...},
//	  "results": [{
//	    "endpoint": "provision",    // health, provision, consume, kb_status, kb_reset
//	    "check": "platform dialect",
//	    "method": "POST",
//	    "url": "http://.../provision",
//	    "result": "ok",             // ok, warn, fail, skip
//	    "http_status": 200,         // 0: no answer
//	    "duration_ms": 3.2,
//	    "budget_ms": 10000,
//	    "reason": "..."             // why, or what was seen
//	  }]
//	}
//
// The package does not log and touches no process-wide state.
package check
