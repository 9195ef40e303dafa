local T = require("harness")
local xml = require("stagehost.xml")

local function trim(s) return (s:match("^%s*(.-)%s*$")) end

-- decoding must fail with nil + "line L, column C: reason", expat's reason whole
local function rejected(s, line, column, reason)
  local _, more = T.decode_error(xml.decode, s, line, column, reason)
  T.eq(more, "", ("decode(%q): nothing after the reason"):format(s:sub(1, 60)))
end

-- A CloudFormation DescribeStacks response, shaped as the Query API returns it.
local DESCRIBE_STACKS = [[<?xml version="1.0" encoding="UTF-8"?>
<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeStacksResult>
    <Stacks>
      <member>
        <StackName>staging-web</StackName>
        <StackId>arn:aws:cloudformation:us-east-1:123456789012:stack/staging-web/6f1e0a60-3a41-11e5-94eb-0a1b2c3d4e5f</StackId>
        <CreationTime>2015-08-30T12:36:00.000Z</CreationTime>
        <StackStatus>UPDATE_COMPLETE</StackStatus>
        <Parameters>
          <member><ParameterKey>Env</ParameterKey><ParameterValue>staging</ParameterValue></member>
        </Parameters>
        <Outputs>
          <member>
            <OutputKey>BucketName</OutputKey>
            <OutputValue>staging-web-assets</OutputValue>
            <Description>Where the assets go</Description>
          </member>
          <member>
            <OutputKey>Url</OutputKey>
            <OutputValue>https://example.com/?a=1&amp;b=2</OutputValue>
          </member>
        </Outputs>
        <Tags/>
      </member>
    </Stacks>
  </DescribeStacksResult>
  <ResponseMetadata>
    <RequestId>b9b4b068-3a41-11e5-94eb-example</RequestId>
  </ResponseMetadata>
</DescribeStacksResponse>
]]

T.test("a CloudFormation DescribeStacks response", function()
  local root = assert(xml.decode(DESCRIBE_STACKS))
  T.eq(root.name, "DescribeStacksResponse")
  T.eq(root.attrs.xmlns, "http://cloudformation.amazonaws.com/doc/2010-05-15/", "attributes, namespaces unprocessed")
  T.eq(#root, 2, "two child elements")
  T.eq(root[1].name, "DescribeStacksResult")
  T.eq(root[2].name, "ResponseMetadata")
  local stacks = xml.path(root, "DescribeStacksResult", "Stacks")
  T.eq(#xml.children(stacks, "member"), 1)
  local stack = xml.child(stacks, "member")
  T.eq(xml.text(stack, "StackName"), "staging-web")
  T.eq(xml.text(stack, "StackStatus"), "UPDATE_COMPLETE")
  local outputs = {}
  for _, m in ipairs(xml.children(xml.child(stack, "Outputs"), "member")) do
    outputs[xml.text(m, "OutputKey")] = xml.text(m, "OutputValue")
  end
  T.eq(outputs.BucketName, "staging-web-assets")
  T.eq(outputs.Url, "https://example.com/?a=1&b=2", "entity decoded")
  T.eq(xml.text(root, "ResponseMetadata", "RequestId"), "b9b4b068-3a41-11e5-94eb-example")
  T.eq(xml.text(root, "DescribeStacksResult", "Stacks", "member", "Parameters", "member", "ParameterValue"), "staging")
  -- an empty element
  local tags = xml.path(stack, "Tags")
  T.eq(tags.text, "")
  T.eq(#tags, 0)
  T.eq(next(tags.attrs), nil)
  T.eq(xml.text(stack, "Tags"), "")
  -- missing steps give nil, never an error
  T.eq(xml.path(root, "DescribeStacksResult", "Nope", "Deeper"), nil)
  T.eq(xml.text(root, "Nope"), nil)
  T.eq(xml.child(nil, "x"), nil)
  T.eq(#xml.children(nil, "x"), 0)
  T.eq(#xml.children(stack, "Nope"), 0)
  -- text is the direct character data only, untrimmed
  T.eq(trim(root.text), "")
  T.ok(root.text:find("\n  ", 1, true), "white space between children kept")
  T.eq(xml.text(root), "", "text with no path: the node's own")
end)

T.test("an ErrorResponse", function()
  local root = assert(xml.decode([[<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <Error>
    <Type>Sender</Type>
    <Code>ValidationError</Code>
    <Message>Stack with id staging-web does not exist</Message>
  </Error>
  <RequestId>42c7b8e0-3a41-11e5-94eb-example</RequestId>
</ErrorResponse>]]))
  T.eq(root.name, "ErrorResponse")
  T.eq(xml.text(root, "Error", "Code"), "ValidationError")
  T.eq(xml.text(root, "Error", "Type"), "Sender")
  T.eq(xml.text(root, "Error", "Message"), "Stack with id staging-web does not exist")
  T.eq(xml.text(root, "RequestId"), "42c7b8e0-3a41-11e5-94eb-example")
end)

T.test("an S3 ListBucketResult with a prefixed namespace", function()
  local root = assert(xml.decode([[<?xml version="1.0" encoding="UTF-8"?>
<s3:ListBucketResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Name>bucket</s3:Name>
<s3:Contents><s3:Key>a &lt;b&gt;.txt</s3:Key><s3:Size>42</s3:Size></s3:Contents>
<s3:Contents><s3:Key>c.txt</s3:Key><s3:Size>0</s3:Size></s3:Contents></s3:ListBucketResult>]]))
  T.eq(root.name, "s3:ListBucketResult", "names as written")
  T.eq(root.attrs["xmlns:s3"], "http://s3.amazonaws.com/doc/2006-03-01/")
  local keys = {}
  for _, c in ipairs(xml.children(root, "s3:Contents")) do keys[#keys + 1] = xml.text(c, "s3:Key") end
  T.eq(table.concat(keys, "|"), "a <b>.txt|c.txt")
end)

T.test("entities, character references, CDATA, mixed content", function()
  local root = assert(xml.decode("<a>&amp; &lt; &gt; &quot; &apos; &#x20AC; &#8364; &#65;</a>"))
  T.eq(root.text, "& < > \" ' \u{20AC} \u{20AC} A")
  root = assert(xml.decode("<a><![CDATA[<not> & markup ]]]]><![CDATA[>]]></a>"))
  T.eq(root.text, "<not> & markup ]]>", "CDATA kept literally, split sections joined")
  root = assert(xml.decode("<p>one <b>two</b> three <i>four</i> five</p>"))
  T.eq(root.text, "one  three  five", "direct text only, concatenated")
  T.eq(root[1].text, "two")
  T.eq(root[2].text, "four")
  T.eq(#root, 2)
  root = assert(xml.decode("<a>\r\nx\ry\n</a>"))
  T.eq(root.text, "\nx\ny\n", "line ends normalised as XML requires")
  root = assert(xml.decode("<a><!-- comment --><?pi data?>x</a>"))
  T.eq(root.text, "x", "comments and processing instructions are dropped")
  T.eq(#root, 0)
end)

T.test("attributes", function()
  local root = assert(xml.decode([[<a id="1" name='single' esc="&lt;&amp;&quot;" ws="a
b	c" empty=""><b x="y"/></a>]]))
  T.eq(root.attrs.id, "1")
  T.eq(root.attrs.name, "single")
  T.eq(root.attrs.esc, "<&\"")
  T.eq(root.attrs.ws, "a b c", "attribute white space normalised as XML requires")
  T.eq(root.attrs.empty, "")
  T.eq(root[1].attrs.x, "y")
  local n = 0
  for _ in pairs(root.attrs) do n = n + 1 end
  T.eq(n, 5)
end)

T.test("encodings: UTF-8 by default, a declared ISO-8859-1 converted to UTF-8", function()
  T.eq(assert(xml.decode("<a>caf\u{e9} \u{1F600}</a>")).text, "caf\u{e9} \u{1F600}")
  T.eq(assert(xml.decode("<?xml version='1.0' encoding='ISO-8859-1'?><a>caf\xe9</a>")).text, "caf\u{e9}")
  T.eq(assert(xml.decode("\xef\xbb\xbf<a>bom</a>")).text, "bom", "a UTF-8 byte order mark")
end)

T.test("malformed documents: nil and line:column", function()
  for reason, cases in pairs {
    -- expat's reason: the documents, each with the line and column it names
    ["no element found"] = { { "", 1, 1 }, { "   \n  ", 2, 3 }, { "<a>", 1, 4 } },
    ["mismatched tag"] = { { "<a><b></a>", 1, 9 }, { "<a>\n <b>\n</a>", 3, 3 } },
    ["junk after document element"] = { { "<a/><b/>", 1, 5 }, { "<a/>junk", 1, 5 } },
    ["not well-formed (invalid token)"] = {
      { "<a>\xff</a>", 1, 4 }, { "<a>\xc3\x28</a>", 1, 4 }, { "<a>\0</a>", 1, 4 }, { "<a b=c/>", 1, 6 },
      { "<a>& b</a>", 1, 5 },
    },
    ["syntax error"] = { { "text", 1, 1 } },
    ["duplicate attribute"] = { { "<a x='1' x='2'/>", 1, 10 } },
    ["undefined entity"] = { { "<a>&foo;</a>", 1, 4 } },
  } do
    for _, c in ipairs(cases) do rejected(c[1], c[2], c[3], reason) end
  end
end)

T.test("any DOCTYPE is refused: billion laughs, external entities and subsets, ATTLIST defaults", function()
  local laughs = [[<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol9;</lolz>]]
  local v, err = xml.decode(laughs)
  T.eq(v, nil)
  T.match(err, "^line 2, column %d+: DOCTYPE is not allowed$")
  for what, doc in pairs {
    ["external entity"] = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    ["parameter entity"] = '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:1/evil.dtd"> %p;]><x/>',
    -- an external subset is never read, so its entities would silently vanish from attributes
    ["external subset, undefined entity in an attribute"] = '<!DOCTYPE x SYSTEM "x.dtd"><x b="x&e;y">12</x>',
    ["external subset, undefined entity in text"] = '<!DOCTYPE x SYSTEM "x.dtd"><x>&e;</x>',
    -- a default attribute declared in the internal subset would appear as if the element had it
    ["ATTLIST default attribute"] = '<!DOCTYPE a [<!ATTLIST a injected CDATA "evil">]><a>1</a>',
    ["empty DOCTYPE"] = "<!DOCTYPE a><a>x</a>",
    ["public id"] = '<!DOCTYPE a PUBLIC "-//x//y" "http://127.0.0.1:1/a.dtd"><a>x</a>',
    ["after a declaration and a comment"] = '<?xml version="1.0"?>\n<!-- c -->\n<!DOCTYPE a><a/>',
  } do
    v, err = xml.decode(doc)
    T.eq(v, nil, what)
    T.match(err, "^line %d+, column %d+: DOCTYPE is not allowed$", what)
  end
  local _, e = xml.decode('<?xml version="1.0"?>\n<!-- c -->\n<!DOCTYPE a><a/>')
  T.match(e, "^line 3, ", "the DOCTYPE's line")
  -- without a DOCTYPE an unknown entity is expat's own error
  rejected("<x>&e;</x>", 1, 4, "undefined entity")
  rejected('<x b="&e;"/>', 1, 1, "undefined entity")
end)

T.test("nesting: 512 levels decode, 513 do not", function()
  local function nested(n) return ("<a>"):rep(n) .. "x" .. ("</a>"):rep(n) end
  local root = assert(xml.decode(nested(512)))
  local depth, node = 1, root
  while node[1] do
    node, depth = node[1], depth + 1
  end
  T.eq(depth, 512)
  T.eq(node.text, "x")
  local v, err = xml.decode(nested(513))
  T.eq(v, nil)
  T.eq(err, "line 1, column 1537: elements nested deeper than 512")
  v, err = xml.decode(nested(100000))
  T.eq(v, nil)
  T.has(err, "nested deeper than 512")
end)

T.test("big documents: long text in many pieces, many children", function()
  local parts = {}
  for i = 1, 20000 do parts[i] = ("line %d &amp; more\n"):format(i) end
  local body = table.concat(parts)
  local root = assert(xml.decode("<a>" .. body .. "</a>"))
  T.eq(root.text, (body:gsub("&amp;", "&")))
  local items = {}
  for i = 1, 5000 do items[i] = ('<member i="%d">%d</member>'):format(i, i * 2) end
  root = assert(xml.decode("<list>" .. table.concat(items) .. "</list>"))
  T.eq(#root, 5000)
  T.eq(root[4321].attrs.i, "4321")
  T.eq(root[4321].text, "8642")
end)

T.test("escape: the five characters, white space as references, round trips", function()
  T.eq(xml.escape([[<a href="x">'&'</a>]]), "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;")
  T.eq(xml.escape(""), "")
  T.eq(xml.escape("plain text \u{20AC}"), "plain text \u{20AC}")
  T.eq(xml.escape("a\tb\nc\r"), "a&#9;b&#10;c&#13;")
  T.eq(xml.escape(42), "42")
  T.eq(xml.escape("\u{7F}\u{80}\u{D7FF}\u{E000}\u{FFFD}\u{10000}\u{10FFFF}"), "\u{7F}\u{80}\u{D7FF}\u{E000}\u{FFFD}\u{10000}\u{10FFFF}")
  local samples = { "", "a & b", "<tag attr=\"v\">", "it's", "]]>", "tab\there", "two\r\nlines\n", "  padded  ",
    "&amp; already", "\u{1F600} emoji", "'\"<>&" }
  for _, s in ipairs(samples) do
    local e = xml.escape(s)
    local root = assert(xml.decode(('<r v="%s">%s</r>'):format(e, e)))
    T.eq(root.text, s, "text round trip of " .. ("%q"):format(s))
    T.eq(root.attrs.v, s, "attribute round trip of " .. ("%q"):format(s))
    root = assert(xml.decode(("<r v='%s'/>"):format(e)))
    T.eq(root.attrs.v, s, "single-quoted attribute round trip of " .. ("%q"):format(s))
  end
end)

T.test("escape: what XML 1.0 cannot carry is an error, not a broken document", function()
  T.raises(function() xml.escape("ab\1c") end, "bad argument #1 to 'xml.escape' (byte 0x01 at position 3 is not allowed in XML)")
  T.raises(function() xml.escape("\0") end, "bad argument #1 to 'xml.escape' (byte 0x00 at position 1 is not allowed in XML)")
  for c = 0, 31 do
    if c ~= 9 and c ~= 10 and c ~= 13 then
      T.raises(function() xml.escape("x" .. string.char(c)) end,
        ("bad argument #1 to 'xml.escape' (byte 0x%02X at position 2 is not allowed in XML)"):format(c))
    end
  end
  T.raises(function() xml.escape("a\u{FFFE}") end, "bad argument #1 to 'xml.escape' (character U+FFFE at position 2 is not allowed in XML)")
  T.raises(function() xml.escape("\u{FFFF}") end, "bad argument #1 to 'xml.escape' (character U+FFFF at position 1 is not allowed in XML)")
  for _, c in ipairs {
    { "caf\xe9", 4, "E9" },          -- Latin-1, not UTF-8
    { "a\xff", 2, "FF" },
    { "\x80", 1, "80" },             -- a stray continuation byte
    { "\xc3\x28", 1, "C3" },         -- a bad continuation
    { "\xe2\x82", 1, "E2" },         -- truncated
    { "\xc0\xaf", 1, "C0" },         -- overlong
    { "\xed\xa0\x80", 1, "ED" },     -- a surrogate
    { "\xf4\x90\x80\x80", 1, "F4" }, -- beyond U+10FFFF
  } do
    T.raises(function() xml.escape(c[1]) end, ("bad argument #1 to 'xml.escape' (invalid UTF-8 at position %d, byte 0x%s)"):format(c[2], c[3]))
  end
end)

T.test("wrong argument types raise naming the function", function()
  T.wants_string(xml.decode, "xml.decode")
  for _, v in ipairs { {}, true, print } do
    T.raises(function() xml.escape(v) end, "bad argument #1 to 'xml.escape' (string expected, got ")
  end
  T.raises(function() xml.escape() end, "bad argument #1 to 'xml.escape'")
end)

T.test("module shape", function()
  local core = require("stagehost.core.xml")
  T.eq(xml.decode, core.decode)
  T.eq(xml.escape, core.escape)
  for _, name in ipairs { "decode", "escape", "child", "children", "path", "text" } do
    T.eq(type(xml[name]), "function", name)
  end
  T.eq(require("stagehost").xml, xml)
end)

T.run()
