/* check_argument(value, what, ok, rule, hint) -> the type of value: the argument check every
   macro shares.  Returns value when ok is true; otherwise (ok false or NULL, as it is for a
   NULL value compared with anything) raises
       <what> must <rule>, got <value or NULL><hint>
   so every macro refuses a bad argument in the same words, before any cast or search.
     value  the argument as passed (any type; rendered with ::VARCHAR in the message)
     what   '<macro>: <argument>', e.g. 'channel_faiss: k'
     ok     the condition the argument meets, e.g. k >= 1
     rule   what ok asks, after "must": 'be at least 1', 'be between 0 and 1'
     hint   text appended to the message ('; 60 is the usual value'), or '' for none
   No parameter has a default, so every call reads whole:
       check_argument(k, 'channel_faiss: k', k >= 1, 'be at least 1', '; pass k := 10 for a top-10') */

CREATE OR REPLACE TEMP MACRO check_argument(value, what, ok, rule, hint) AS
CASE
    WHEN ok THEN value
    ELSE error(what || ' must ' || rule || ', got ' || coalesce(value::VARCHAR, 'NULL') || hint)
END;
