"""The WeChat official account: the bot (`service`, `api`), template messages (`notify`), the shared access
token (`tokens`), the menu, and the member H5 pages (`pages` inside the frame of `page_kit`)."""
