// A test OpenID provider for pyheadscale: panva's oidc-provider with one confidential client (PKCE required),
// a handful of accounts in two email domains with groups, and its own small login and consent pages.
//
// Usage: node server.js '<json options>'   options: {"redirect_uri", "client_id", "client_secret"}
// It listens on 127.0.0.1 (ephemeral port) and prints one JSON line {"issuer": ...} once it is serving.
// PUT /_test/accounts/<id> with a JSON body changes that account's claims (so a test can see a profile refresh).
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const options = JSON.parse(process.argv[2] || '{}');
for (const key of ['redirect_uri', 'client_id', 'client_secret']) {
  if (!options[key]) {
    console.error(`missing option ${key}`);
    process.exit(2);
  }
}

const accounts = {
  alice: {
    password: 'alice-password', email: 'alice@example.com', email_verified: true, name: 'Alice Liddell',
    preferred_username: 'alice', picture: 'https://pictures.example.com/alice.png', groups: ['engineering', 'admins'],
  },
  bob: {
    password: 'bob-password', email: 'bob@other.org', email_verified: true, name: 'Bob Builder',
    preferred_username: 'bob', picture: 'https://pictures.other.org/bob.png', groups: ['sales'],
  },
  carol: {
    password: 'carol-password', email: 'carol@example.com', email_verified: false, name: 'Carol Unverified',
    preferred_username: 'carol', picture: '', groups: ['engineering'],
  },
  dave: {
    password: 'dave-password', email: 'dave@example.com', email_verified: true, name: 'Dave Sales',
    preferred_username: 'Dave Smith', picture: '', groups: ['sales'],
  },
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>`
    + `<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, error) {
  return page('Sign-in', `${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<input name="login" placeholder="username"><input name="password" type="password">
<button type="submit">Sign in</button></form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Authorize', `<p>${escapeHtml(clientId)} asks for: ${escapeHtml(scopes.join(' '))}</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Continue</button></form>
<a href="/interaction/${uid}/abort">Cancel</a>`);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: options.client_id,
      client_secret: options.client_secret,
      redirect_uris: [options.redirect_uri],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'picture', 'preferred_username'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    async findAccount(ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          const { password: _password, ...claims } = accounts[id];
          return { sub: id, ...claims };
        },
      };
    },
  });
  const oidc = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session, grantId } = details;
    if (action === 'abort') {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'aborted' },
        { mergeWithLastSubmission: false });
      return;
    }
    if (action === 'login' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const account = accounts[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        send(res, 200, loginPage(uid, 'Invalid username or password'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: form.get('login') } },
        { mergeWithLastSubmission: false });
      return;
    }
    if (action === 'confirm' && req.method === 'POST') {
      await readBody(req);
      const grant = grantId ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
        { mergeWithLastSubmission: true });
      return;
    }
    if (prompt.name === 'login') {
      send(res, 200, loginPage(uid));
    } else {
      send(res, 200, consentPage(uid, params.client_id, String(params.scope).split(' ')));
    }
  }

  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
    const test = url.pathname.match(/^\/_test\/accounts\/([^/]+)$/);
    try {
      if (match) {
        await interaction(req, res, match[1], match[2]);
      } else if (test && req.method === 'PUT' && accounts[test[1]]) {
        Object.assign(accounts[test[1]], JSON.parse(await readBody(req)));
        send(res, 204, '');
      } else {
        oidc(req, res);
      }
    } catch (err) {
      send(res, 500, page('Error', escapeHtml(err.message)));
    }
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
