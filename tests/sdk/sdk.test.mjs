// The official OpenAI and Anthropic SDKs, unmodified but for their base URL, against the real
// switchyard binary, whose targets (one per provider kind) point at the in-repo mock upstream.
//
// Needs SWITCHYARD_BINARY and MOCK_UPSTREAM_BINARY (ctest sets both).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const kTokens = 5;
// What mock_upstream --tokens 5 answers: "tok" then " tok" per token.
const kAnswer = 'tok' + ' tok'.repeat(kTokens - 1);
const kPromptTokens = 7;  // the mock's default usage
const kStartTimeoutMs = 15000;
// The gateway requires an API key; the config holds only its SHA-256.
const kApiKey = 'sk-sdk-test-4b1e0c7a';
const kApiKeyHash = createHash('sha256').update(kApiKey).digest('hex');

const children = [];
let workDir;
let gatewayUrl;

// Starts `binary` and resolves with the first match of `pattern` in its stdout or stderr.
function startAndWaitFor(binary, args, pattern) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    const timer = setTimeout(() => {
      reject(new Error(`${binary} did not start in time; output:\n${output}`));
    }, kStartTimeoutMs);
    const onData = (data) => {
      output += data.toString();
      const match = output.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${binary} exited with ${code}; output:\n${output}`));
    });
    child.on('error', reject);
  });
}

before(async () => {
  const gateway = process.env.SWITCHYARD_BINARY;
  const mock = process.env.MOCK_UPSTREAM_BINARY;
  assert.ok(gateway && mock, 'set SWITCHYARD_BINARY and MOCK_UPSTREAM_BINARY');
  const [, mockBase] = await startAndWaitFor(
      mock, ['--port', '0', '--tokens', String(kTokens)], /listening on (http:\/\/\S+)\/v1/);
  workDir = mkdtempSync(join(tmpdir(), 'switchyard-sdk-'));
  const timeouts = '{ connect_seconds: 2, first_byte_seconds: 5, idle_seconds: 5, total_seconds: 10 }';
  const config = `
listeners: { http: 127.0.0.1:0, grpc: 127.0.0.1:0 }
auth:
  keys:
    - { name: sdk-tests, tenant: sdk, sha256: ${kApiKeyHash} }
targets:
  - { name: gpt, kind: openai_compatible, model: gpt-up, base_url: "${mockBase}/v1", timeouts: ${timeouts} }
  - { name: claude, kind: anthropic, model: claude-up, base_url: "${mockBase}/v1", timeouts: ${timeouts} }
  - { name: gem, kind: gemini, model: gemini-up, base_url: "${mockBase}/v1beta", timeouts: ${timeouts} }
policy:
  default: gpt
`;
  const configPath = join(workDir, 'switchyard.yaml');
  writeFileSync(configPath, config);
  const [, address] = await startAndWaitFor(
      gateway, ['serve', '--config', configPath], /listening http=(\S+)/);
  gatewayUrl = `http://${address}`;
});

after(() => {
  for (const child of children.reverse()) child.kill('SIGTERM');
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

const kTargets = ['gpt', 'claude', 'gem'];

describe('openai SDK', () => {
  const client = (apiKey = kApiKey) => new OpenAI({ apiKey, baseURL: `${gatewayUrl}/v1`, maxRetries: 0,
                                    timeout: 20000 });

  for (const model of kTargets) {
    test(`chat.completions.create to ${model}`, async () => {
      const completion = await client().chat.completions.create({
        model, max_tokens: 16, messages: [{ role: 'user', content: 'Say hello' }],
      });
      assert.equal(completion.object, 'chat.completion');
      assert.equal(completion.choices[0].message.content, kAnswer);
      assert.equal(completion.choices[0].finish_reason, 'stop');
      assert.equal(completion.usage.prompt_tokens, kPromptTokens);
      assert.equal(completion.usage.completion_tokens, kTokens);
    });

    test(`streaming chat.completions.create to ${model}`, async () => {
      const stream = await client().chat.completions.create({
        model, max_tokens: 16, stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'Say hello' }],
      });
      let text = '';
      let finish = null;
      let usage = null;
      let chunks = 0;
      for await (const chunk of stream) {
        ++chunks;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        text += choice.delta.content ?? '';
        finish = choice.finish_reason ?? finish;
      }
      assert.equal(text, kAnswer);
      assert.ok(chunks > kTokens, `expected one chunk per token, got ${chunks}`);
      assert.equal(finish, 'stop');
      assert.equal(usage.prompt_tokens, kPromptTokens);
      assert.equal(usage.completion_tokens, kTokens);
    });
  }

  test('unknown model is a NotFoundError', async () => {
    await assert.rejects(
        client().chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
        (error) => error instanceof OpenAI.NotFoundError && /nope/.test(error.message));
  });

  test('a wrong API key is an AuthenticationError', async () => {
    await assert.rejects(
        client('sk-wrong').chat.completions.create({ model: 'gpt', messages: [{ role: 'user', content: 'x' }] }),
        (error) => error instanceof OpenAI.AuthenticationError && error.code === 'invalid_api_key');
  });
});

describe('anthropic SDK', () => {
  const client = (apiKey = kApiKey) => new Anthropic({ apiKey, baseURL: gatewayUrl, maxRetries: 0,
                                       timeout: 20000 });

  for (const model of kTargets) {
    test(`messages.create to ${model}`, async () => {
      const message = await client().messages.create({
        model, max_tokens: 16, system: 'Be brief.',
        messages: [{ role: 'user', content: 'Say hello' }],
      });
      assert.equal(message.type, 'message');
      assert.equal(message.role, 'assistant');
      assert.deepEqual(message.content, [{ type: 'text', text: kAnswer }]);
      assert.equal(message.stop_reason, 'end_turn');
      assert.equal(message.usage.input_tokens, kPromptTokens);
      assert.equal(message.usage.output_tokens, kTokens);
    });

    test(`messages.stream to ${model}`, async () => {
      const stream = client().messages.stream({
        model, max_tokens: 16, messages: [{ role: 'user', content: 'Say hello' }],
      });
      const deltas = [];
      stream.on('text', (text) => deltas.push(text));
      const message = await stream.finalMessage();
      assert.equal(deltas.join(''), kAnswer);
      assert.equal(deltas.length, kTokens);
      assert.equal(message.content[0].text, kAnswer);
      assert.equal(message.stop_reason, 'end_turn');
      assert.equal(message.usage.input_tokens, kPromptTokens);
      assert.equal(message.usage.output_tokens, kTokens);
    });
  }

  test('raw stream events come in Anthropic order', async () => {
    const stream = await client().messages.create({
      model: 'claude', max_tokens: 16, stream: true,
      messages: [{ role: 'user', content: 'Say hello' }],
    });
    const types = [];
    for await (const event of stream) types.push(event.type);
    assert.deepEqual(types, [
      'message_start', 'content_block_start',
      ...Array(kTokens).fill('content_block_delta'),
      'content_block_stop', 'message_delta', 'message_stop',
    ]);
  });

  test('invalid request is a BadRequestError in Anthropic shape', async () => {
    await assert.rejects(
        client().messages.create({ model: 'claude', max_tokens: 0,
                                   messages: [{ role: 'user', content: 'x' }] }),
        (error) => error instanceof Anthropic.BadRequestError &&
                   error.error?.type === 'error' &&
                   error.error?.error?.type === 'invalid_request_error' &&
                   /max_tokens/.test(error.message));
  });

  test('a wrong API key is an AuthenticationError in Anthropic shape', async () => {
    await assert.rejects(
        client('sk-wrong').messages.create({ model: 'claude', max_tokens: 8,
                                             messages: [{ role: 'user', content: 'x' }] }),
        (error) => error instanceof Anthropic.AuthenticationError &&
                   error.error?.error?.type === 'authentication_error');
  });
});
