DROP TABLE bot_tokens;
DROP TABLE refresh_tokens;
DROP TABLE users;
