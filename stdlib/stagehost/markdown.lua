-- Markdown (CommonMark) to HTML on libcmark, in safe mode: raw HTML is left out and unsafe links
-- (javascript:, vbscript:, file:, data: other than images) are dropped. The approval page
-- renders checklists with it.
--   markdown.html(text [, {smart = true, hardbreaks = true}]) -> html
--   markdown.version() -> "0.30.2"
return require "stagehost.core.markdown"
