"""The online half of bring-your-own data: per-user history on Feast, and the feedback log.

Nothing is re-exported here: importing ``online.feedback_log`` must not pay for Feast's import
(over a second), so callers import ``online.history`` and ``online.feedback_log`` by name.
"""
