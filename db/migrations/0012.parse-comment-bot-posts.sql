-- parse-comment's announced posts (functions/parse-comment/function/bot.py): before the
-- bot posts a comment it has no id for, it writes the comment's key here and commits at
-- once, on a connection of its own, before the GitHub call. The row is deleted in the
-- delivery's transaction that records the comment's id (bot_comments). So a row that is
-- still here names a post whose outcome is unknown (the try that made it failed or did
-- not commit): only then does a retry search the issue's comments for the hidden marker.
-- A first post is one GitHub call, not one per page of the issue's comments.
-- depends: 0006.parse-comment-bounties

CREATE TABLE parse_comment.bot_posts (
  key           text        PRIMARY KEY,
  repository    text        NOT NULL,
  issue_number  integer     NOT NULL CHECK (issue_number > 0),
  announced_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE parse_comment.bot_posts OWNER TO parse_comment;
