-- todo-crud's lists and tasks (functions/todo-crud/README.md), in its own schema, owned
-- by its role. `version` is the optimistic-concurrency counter a command names (stale →
-- 409); `seq` orders pages (cursor = the last seq seen). Deleting a list deletes its
-- tasks. A task's price (assign_fee, reward) is fixed when it is created.
-- depends: 0005.outbox

CREATE TABLE todo.lists (
  list_id    uuid        PRIMARY KEY,
  seq        bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
  owner      text        NOT NULL CHECK (owner ~ '^[\x21-\x7e]{1,200}$'),
  title      text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
  version    integer     NOT NULL CHECK (version >= 1),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX lists_by_owner ON todo.lists (owner, seq);

CREATE TABLE todo.tasks (
  task_id      uuid          PRIMARY KEY,
  seq          bigint        GENERATED ALWAYS AS IDENTITY UNIQUE,
  list_id      uuid          NOT NULL REFERENCES todo.lists (list_id) ON DELETE CASCADE,
  owner        text          NOT NULL,  -- the list's owner
  title        text          NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
  notes        text          NOT NULL DEFAULT '' CHECK (char_length(notes) <= 4000),
  status       text          NOT NULL CHECK (status IN ('open', 'done')),
  assignee     text          CHECK (assignee ~ '^[\x21-\x7e]{1,200}$'),
  assign_fee   numeric(40,18) NOT NULL CHECK (assign_fee >= 0),
  reward       numeric(40,18) NOT NULL CHECK (reward >= 0),
  denomination text          NOT NULL,
  decimals     integer       NOT NULL CHECK (decimals >= 0),
  version      integer       NOT NULL CHECK (version >= 1),
  actor        text          NOT NULL,  -- who made the last change
  created_at   timestamptz   NOT NULL,
  updated_at   timestamptz   NOT NULL
);
CREATE INDEX tasks_by_list ON todo.tasks (list_id, seq);
CREATE INDEX tasks_by_assignee ON todo.tasks (assignee, seq) WHERE assignee IS NOT NULL;

ALTER TABLE todo.lists OWNER TO todo;
ALTER TABLE todo.tasks OWNER TO todo;
